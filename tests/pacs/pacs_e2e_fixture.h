#pragma once
// The PACS end-to-end fixture shared by pacs_e2e_test.cc and pacs_fault_test.cc: Orthanc (Debian package) on
// loopback ports with a temporary storage folder and StableAge 1 s, cmn-server with the untrained 2-view test
// bundle, cmn-pacs, and uploads with DCMTK's storescu; every part a real process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "cmn/pacs/pacs_loop.h"
#include "cmn/pipeline/dicom_send.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/preprocessing/dicom.h"
#include "cmn/v1/report_service.grpc.pb.h"
#include "common/child_process.h"
#include "common/sr_validators.h"
#include "pacs/pacs_test_util.h"

namespace cmn::pacs::testing {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kOrthanc[] = "/usr/sbin/Orthanc";
constexpr char kDicomWebPlugin[] = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

using Child = cmn::testing::ChildProcess;

// A TCP socket bound to 127.0.0.1:`port` (0 = any free port), with SO_REUSEADDR as Orthanc's DICOM (DCMTK)
// and HTTP (CivetWeb) servers bind theirs; -1 when the bind fails. The caller closes it.
inline int bind_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline int free_port() {
  const int fd = bind_loopback(0);
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Whether Orthanc could listen on `port` now: false while another socket still listens there.
inline bool port_bindable(int port) {
  const int fd = bind_loopback(port);
  const bool ok = fd >= 0 && ::listen(fd, 1) == 0;
  if (fd >= 0) ::close(fd);
  return ok;
}

// Polls `done` every 200 ms until it is true or `limit` passes.
template <typename F>
bool wait_for(std::chrono::seconds limit, F done) {
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return done();
}

// The untrained 2-view bundle, made once per build tree with cmn-bundle (under a lock: ctest runs in parallel).
inline std::string test_bundle() {
  const std::string dir = std::string(CMN_BINARY_DIR) + "/tests/pacs_fixtures/untrained_v2";
  fs::create_directories(fs::path(dir).parent_path());
  const int fd = ::open((dir + ".lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ::flock(fd, LOCK_EX);
  if (!fs::exists(dir + "/SHA256SUMS")) {
    ScopedDir logs("bundle");
    const ProcessResult r = run_process({CMN_BUNDLE_BIN, "init-untrained", "--out", dir, "--views", "2", "--seed", "7",
                                         "--vocab", std::string(CMN_SOURCE_DIR) + "/configs/default_vocab.txt",
                                         "--name", "cmn-untrained-pacs", "--force"},
                                        logs.path());
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return dir;
}

// storescu proposes only uncompressed transfer syntaxes unless told; Orthanc then cannot take compressed files.
inline std::string storescu_proposal(const std::string& transfer_syntax) {
  static const std::map<std::string, std::string> flags = {
      {"1.2.840.10008.1.2.4.50", "-xy"}, {"1.2.840.10008.1.2.4.51", "-xx"}, {"1.2.840.10008.1.2.4.57", "-xs"},
      {"1.2.840.10008.1.2.4.70", "-xs"}, {"1.2.840.10008.1.2.4.80", "-xt"}, {"1.2.840.10008.1.2.4.81", "-xu"},
      {"1.2.840.10008.1.2.4.90", "-xv"}, {"1.2.840.10008.1.2.4.91", "-xw"}, {"1.2.840.10008.1.2.5", "-xr"}};
  const auto it = flags.find(transfer_syntax);
  return it == flags.end() ? "" : it->second;
}

struct Orthanc {
  int http_port = 0, dicom_port = 0;
  std::string dir;
  int stable_age_s = 1;                  // Orthanc's StableAge
  std::vector<std::string> lua_scripts;  // Orthanc's "LuaScripts" (callbacks that can hold a store, for fault tests)
  std::unique_ptr<Child> process;
  std::unique_ptr<httplib::Client> client;

  void write_config(bool dicom_enabled) const {
    json config = {{"Name", "cmn-e2e"},
                   {"StorageDirectory", dir + "/db"},
                   {"IndexDirectory", dir + "/db"},
                   {"HttpPort", http_port},
                   {"DicomPort", dicom_port},
                   {"DicomServerEnabled", dicom_enabled},
                   {"DicomAet", "ORTHANC"},
                   {"DicomCheckCalledAet", false},
                   {"StableAge", stable_age_s},
                   {"RemoteAccessAllowed", false},
                   {"AuthenticationEnabled", false},
                   {"HttpCompressionEnabled", false},
                   {"DicomModalities", {{"cmn", {"CMN", "127.0.0.1", 11112}}, {"upload", {"STORESCU", "127.0.0.1", 11113}}}}};
    if (fs::exists(kDicomWebPlugin)) config["Plugins"] = json::array({kDicomWebPlugin});
    if (!lua_scripts.empty()) config["LuaScripts"] = lua_scripts;
    write_bytes(dir + "/orthanc.json", config.dump(2));
  }
  bool start(bool dicom_enabled = true) {
    write_config(dicom_enabled);
    process = std::make_unique<Child>(std::vector<std::string>{kOrthanc, dir + "/orthanc.json"}, dir + "/orthanc");
    client = std::make_unique<httplib::Client>("127.0.0.1", http_port);
    client->set_connection_timeout(2, 0);
    bool exited = false;  // e.g. a port in use: Orthanc stops at once, and waiting longer cannot help
    const bool up = wait_for(std::chrono::seconds(240), [&] {
      exited = process->wait_for(std::chrono::milliseconds(0)) != -1;
      if (exited) return true;
      auto r = client->Get("/system");
      return r && r->status == 200;
    });
    return up && !exited;
  }
  // A crash: SIGKILL, then wait (bounded) until its ports are free again. Not only Orthanc holds them: a process
  // it started (the hold script's `sleep 0.1`) inherited its listening sockets and keeps them until it ends, so
  // a restart at once can fail with "Address already in use".
  bool crash() {
    process->kill_now();
    return wait_for(std::chrono::seconds(60), [&] { return port_bindable(http_port) && port_bindable(dicom_port); });
  }
  json get(const std::string& path) const {
    auto r = client->Get(path);
    if (!r || r->status != 200) return json();
    return json::parse(r->body, nullptr, false);
  }
  std::string file(const std::string& instance_id) const {
    auto r = client->Get("/instances/" + instance_id + "/file");
    return r && r->status == 200 ? r->body : "";
  }
  // Orthanc study ID -> its SR instances' IDs.
  std::vector<std::string> sr_instances(const std::string& study) const {
    std::vector<std::string> ids;
    const json instances = get("/studies/" + study + "/instances");
    if (!instances.is_array()) return ids;
    for (const auto& i : instances) {
      const json tags = get("/instances/" + i.value("ID", std::string()) + "/simplified-tags");
      if (tags.is_object() && tags.value("Modality", std::string()) == "SR") ids.push_back(i.value("ID", std::string()));
    }
    return ids;
  }
};

class PacsEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kOrthanc)) GTEST_SKIP() << "Orthanc is not installed (Debian: apt-get install orthanc)";
    dir_ = std::make_unique<ScopedDir>("e2e");
    orthanc_.dir = dir_->path();
    orthanc_.http_port = free_port();
    do {
      orthanc_.dicom_port = free_port();
    } while (orthanc_.dicom_port == orthanc_.http_port);
  }

  // cmn-server on a free port; returns its gRPC port (0 on failure).
  int start_server() {
    server_ = std::make_unique<Child>(
        std::vector<std::string>{CMN_SERVER_BIN, "model.bundle=" + test_bundle(), "server.host=127.0.0.1",
                                 "server.port=0", "metrics.port=-1", "model.threads=1",
                                 "sr.uid_root=1.2.826.0.1.3680043.10.543.42"},
        dir_->file("server"));
    int port = 0;
    wait_for(std::chrono::seconds(240), [&] {
      const std::string out = server_->out();
      const size_t at = out.find("listening port=");
      if (at != std::string::npos) port = std::atoi(out.c_str() + at + 15);
      return port > 0;
    });
    return port;
  }

  void start_pacs(int server_port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {CMN_PACS_BIN,
                                     "--orthanc", "http://127.0.0.1:" + std::to_string(orthanc_.http_port),
                                     "--server", "127.0.0.1:" + std::to_string(server_port),
                                     "--state", dir_->file("pacs-state.json"),
                                     "--poll-s", "0.2",
                                     "--dicom-host", "127.0.0.1",
                                     "--dicom-port", std::to_string(orthanc_.dicom_port),
                                     "--called-ae", "ORTHANC", "--calling-ae", "CMN",
                                     "--retry-initial-s", "0.5", "--retry-max-s", "2", "--max-attempts", "100"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pacs_ = std::make_unique<Child>(argv, dir_->file("pacs"));
  }

  // storescu of one file; the SOP Instance UID it carries.
  std::string upload(const std::string& path) {
    auto info = preprocessing::read_dicom_info(read_bytes(path), path);
    EXPECT_TRUE(info.ok()) << info.status();
    std::vector<std::string> argv = {"storescu", "-aet", "STORESCU", "-aec", "ORTHANC"};
    const std::string proposal = info.ok() ? storescu_proposal(info->transfer_syntax_uid) : "";
    if (!proposal.empty()) argv.push_back(proposal);
    argv.insert(argv.end(), {"127.0.0.1", std::to_string(orthanc_.dicom_port), path});
    const ProcessResult r = run_process(argv, dir_->path());
    EXPECT_EQ(r.exit_code, 0) << path << ": " << r.err;
    EXPECT_EQ(r.err.find("E:"), std::string::npos) << path << ": " << r.err;
    return info.ok() ? info->sop_instance_uid : "";
  }

  // cmn-pacs has caught up: every study in Orthanc is stable again (an SR's arrival unsettles its study, then
  // Orthanc logs StableStudy), cmn-pacs has read every change Orthanc logged and has nothing pending or settling,
  // and `also` (a test's own condition, e.g. "every study has its SR") holds. Only then is "still one SR" a
  // finding: after a fixed sleep, a slow or loaded machine may not have looked yet.
  bool pacs_settled(std::chrono::seconds limit = std::chrono::seconds(120),
                    const std::function<bool()>& also = [] { return true; }) {
    return wait_for(limit, [&] {
      if (!also()) return false;
      const json studies = orthanc_.get("/studies");
      if (!studies.is_array()) return false;
      for (const auto& s : studies) {
        if (!orthanc_.get("/studies/" + s.get<std::string>()).value("IsStable", false)) return false;
      }
      const json last = orthanc_.get("/changes?last");
      auto state = load_state(dir_->file("pacs-state.json"));
      return last.is_object() && state.ok() && state->pending.empty() && state->settling.empty() &&
             state->last_change >= last.value("Last", int64_t{-1});
    });
  }

  std::string diagnostics() const {
    std::string out;
    if (pacs_) out += "--- cmn-pacs stderr:\n" + pacs_->err();
    if (server_) out += "--- cmn-server stderr (tail):\n" + server_->err().substr(server_->err().size() > 4000 ? server_->err().size() - 4000 : 0);
    return out;
  }

  // The report cmn-server gives for the study's images as Orthanc holds them, compared with the SR in Orthanc.
  void expect_sr_matches_server(const std::string& study, int server_port, const std::set<std::string>& uploaded) {
    const auto srs = orthanc_.sr_instances(study);
    ASSERT_EQ(srs.size(), 1u) << "study " << study << " has " << srs.size() << " SRs";
    auto sr = pipeline::read_report_sr(orthanc_.file(srs[0]));
    ASSERT_TRUE(sr.ok()) << sr.status();

    v1::GenerateReportRequest request;
    for (const auto& i : orthanc_.get("/studies/" + study + "/instances")) {
      const std::string id = i.value("ID", std::string());
      if (id != srs[0]) request.add_instances()->set_data(orthanc_.file(id));
    }
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_port), grpc::InsecureChannelCredentials());
    auto stub = v1::ReportService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::GenerateReportResponse response;
    const grpc::Status status = stub->GenerateReport(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();

    EXPECT_FALSE(response.report().empty()) << "an empty report would make the comparison vacuous";
    EXPECT_EQ(sr->text(), response.report()) << "study " << study;
    EXPECT_EQ(sr->study_instance_uid, response.study_instance_uid());
    EXPECT_EQ(sr->completion_flag, "COMPLETE");
    EXPECT_EQ(sr->verification_flag, "UNVERIFIED");
    std::set<std::string> slots, evidence;
    for (const auto& slot : response.slots()) slots.insert(slot.sop_instance_uid());
    for (const auto& e : sr->evidence) {
      evidence.insert(e.sop_instance_uid);
      EXPECT_EQ(uploaded.count(e.sop_instance_uid), 1u) << e.sop_instance_uid << " was not uploaded";
    }
    EXPECT_EQ(evidence, slots);
    // What the PACS holds is clean in PixelMed (TID 2000) and dciodvfy, and names the algorithm (IHE AIR).
    EXPECT_EQ(sr->preliminary_flag, "PRELIMINARY");
    EXPECT_EQ(sr->contributing_equipment.size(), 1u);
    std::vector<std::string> sources;
    for (const auto& instance : request.instances()) sources.push_back(instance.data());
    EXPECT_EQ(cmn::testing::sr_validator_problems({orthanc_.file(srs[0])}, "TID_2000", sources), "");
  }

  std::unique_ptr<ScopedDir> dir_;
  Orthanc orthanc_;
  std::unique_ptr<Child> server_, pacs_;
};

}  // namespace cmn::pacs::testing
