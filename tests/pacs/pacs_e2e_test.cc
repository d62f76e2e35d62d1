// The PACS loop end to end, every part real: Orthanc (Debian package) on loopback ports with a temporary
// storage folder and StableAge 1 s, cmn-server with the untrained 2-view test bundle, cmn-pacs, and the chest
// DICOMs of ../shared/data/dicom/chest uploaded with DCMTK's storescu (C-STORE). Skipped only when the Orthanc
// binary is not installed (Debian: orthanc); CI installs it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
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
#include "common/sr_validators.h"
#include "common/fhir_validator.h"
#include "fhir/loopback_fhir_server.h"
#include "pacs/pacs_test_util.h"

extern char** environ;

namespace cmn::pacs::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kOrthanc[] = "/usr/sbin/Orthanc";
constexpr char kDicomWebPlugin[] = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

// A child process (stdout/stderr to files) that is killed and reaped when it goes out of scope.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_base) : log_base_(log_base) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, (log_base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, (log_base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  bool running() const { return pid_ > 0; }
  // SIGTERM, then SIGKILL after 10 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto until = Clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }
  std::string out() const { return read_bytes(log_base_ + ".out"); }
  std::string err() const { return read_bytes(log_base_ + ".err"); }

 private:
  pid_t pid_ = -1;
  std::string log_base_;
};

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
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
std::string test_bundle() {
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
std::string storescu_proposal(const std::string& transfer_syntax) {
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
                   {"StableAge", 1},
                   {"RemoteAccessAllowed", false},
                   {"AuthenticationEnabled", false},
                   {"HttpCompressionEnabled", false},
                   {"DicomModalities", {{"cmn", {"CMN", "127.0.0.1", 11112}}, {"upload", {"STORESCU", "127.0.0.1", 11113}}}}};
    if (fs::exists(kDicomWebPlugin)) config["Plugins"] = json::array({kDicomWebPlugin});
    write_bytes(dir + "/orthanc.json", config.dump(2));
  }
  bool start(bool dicom_enabled = true) {
    write_config(dicom_enabled);
    process = std::make_unique<Child>(std::vector<std::string>{kOrthanc, dir + "/orthanc.json"}, dir + "/orthanc");
    client = std::make_unique<httplib::Client>("127.0.0.1", http_port);
    client->set_connection_timeout(2, 0);
    return wait_for(std::chrono::seconds(30), [&] {
      auto r = client->Get("/system");
      return r && r->status == 200;
    });
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
    wait_for(std::chrono::seconds(60), [&] {
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

TEST_F(PacsEndToEndTest, EveryUploadedStudyGetsOneSrMatchingTheServersReport) {
  const auto start = Clock::now();
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not start:\n" << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << "cmn-server did not start:\n" << (server_ ? server_->err() : "");
  start_pacs(server_port);

  std::set<std::string> uploaded;
  std::set<std::string> study_uids;
  std::set<std::string> secrets;
  for (const auto& entry : fs::directory_iterator(shared_path("data/dicom/chest"))) {
    if (entry.path().extension() != ".dcm") continue;
    uploaded.insert(upload(entry.path().string()));
    auto info = preprocessing::read_dicom_info(read_bytes(entry.path().string()), entry.path().string());
    if (info.ok()) study_uids.insert(info->study_instance_uid);
    auto file = parse(read_bytes(entry.path().string()));
    for (const DcmTagKey& key : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_AccessionNumber}) {
      const std::string value = get(file->getDataset(), key);
      if (value.size() >= 4) secrets.insert(value);
    }
  }
  ASSERT_GE(study_uids.size(), 3u);

  // Every study holds an SR within a bounded time.
  json studies;
  const bool all = wait_for(std::chrono::seconds(90), [&] {
    studies = orthanc_.get("/studies");
    if (!studies.is_array() || studies.size() != study_uids.size()) return false;
    for (const auto& s : studies) {
      if (orthanc_.sr_instances(s.get<std::string>()).empty()) return false;
    }
    return true;
  });
  ASSERT_TRUE(all) << "not every study got an SR within 90 s\n" << diagnostics();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::cout << "[ e2e ] " << study_uids.size() << " studies reported in " << seconds << " s" << std::endl;

  // The SR's own arrival makes each study stable again: after that has been seen, still one SR per study.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  for (const auto& s : studies) expect_sr_matches_server(s.get<std::string>(), server_port, uploaded);

  // Logs carry no patient identifiers (those of the uploaded files).
  const std::string logs = pacs_->err() + pacs_->out();
  for (const auto& secret : secrets) {
    EXPECT_EQ(logs.find(secret), std::string::npos) << "cmn-pacs log contains a patient attribute";
  }
  // The state file knows every study as done.
  pacs_->stop();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), study_uids.size());
  EXPECT_TRUE(state->pending.empty());
  EXPECT_TRUE(state->failed.empty());

  // Even with its state file lost, a new cmn-pacs replays the whole change feed and finds the SRs already there.
  fs::remove(dir_->file("pacs-state.json"));
  start_pacs(server_port);
  ASSERT_TRUE(wait_for(std::chrono::seconds(60), [&] {
    auto replayed = load_state(dir_->file("pacs-state.json"));
    return replayed.ok() && replayed->done.size() == study_uids.size() && replayed->pending.empty();
  })) << diagnostics();
  for (const auto& s : studies) EXPECT_EQ(orthanc_.sr_instances(s.get<std::string>()).size(), 1u);
}

TEST_F(PacsEndToEndTest, SendersStoreTheSrByCStoreAndByStowRs) {
  if (!fs::exists(kDicomWebPlugin)) GTEST_SKIP() << "orthanc-dicomweb is not installed";
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  pipeline::SrOptions options;
  options.model_name = "sender-test";

  pipeline::DicomPeer peer;
  peer.port = orthanc_.dicom_port;
  peer.calling_ae = "CMN";
  peer.called_ae = "ORTHANC";
  const auto by_dicom = pipeline::write_report_sr({image}, {"sent by c-store ."}, options);
  ASSERT_TRUE(by_dicom.ok()) << by_dicom.status();
  const absl::Status stored = pipeline::c_store(*by_dicom, peer);
  ASSERT_TRUE(stored.ok()) << stored;

  pipeline::StowTarget stow;
  stow.base_url = "http://127.0.0.1:" + std::to_string(orthanc_.http_port) + "/dicom-web";
  const auto by_web = pipeline::write_report_sr({image}, {"sent by stow-rs ."}, options);
  ASSERT_TRUE(by_web.ok()) << by_web.status();
  const absl::Status posted_sr = pipeline::stow_rs(*by_web, stow);
  ASSERT_TRUE(posted_sr.ok()) << posted_sr;

  std::set<std::string> texts;
  for (const auto& id : orthanc_.sr_instances(study)) {
    auto sr = pipeline::read_report_sr(orthanc_.file(id));
    ASSERT_TRUE(sr.ok()) << sr.status();
    texts.insert(sr->text());
  }
  EXPECT_EQ(texts, (std::set<std::string>{"sent by c-store .", "sent by stow-rs ."}));
}

TEST_F(PacsEndToEndTest, StowRsModeStoresTheSrIntoTheStudy) {
  if (!fs::exists(kDicomWebPlugin)) GTEST_SKIP() << "orthanc-dicomweb is not installed";
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port, {"--store", "stow", "--stow-url",
                           "http://127.0.0.1:" + std::to_string(orthanc_.http_port) + "/dicom-web"});
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(60), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  expect_sr_matches_server(study, server_port, {"1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888"});
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("store=stow"), std::string::npos) << pacs_->err();
}

TEST_F(PacsEndToEndTest, InProcessModeWritesTheSameReportAsTheServer) {
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();  // only to compare with: cmn-pacs does not call it
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(/*server_port=*/1, {"--bundle", test_bundle(), "--threads", "1"});
  std::set<std::string> uploaded;
  std::string study;
  for (const char* name : {"RG1_J2KI.dcm", "RG1_JLSN.dcm"}) {
    const std::string bytes = read_bytes(shared_path(std::string("data/dicom/chest/") + name));
    auto posted = orthanc_.client->Post("/instances", bytes, "application/dicom");
    ASSERT_TRUE(posted && posted->status == 200);
    study = json::parse(posted->body).value("ParentStudy", std::string());
    auto info = preprocessing::read_dicom_info(bytes, name);
    ASSERT_TRUE(info.ok());
    uploaded.insert(info->sop_instance_uid);
  }
  ASSERT_TRUE(wait_for(std::chrono::seconds(90), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  expect_sr_matches_server(study, server_port, uploaded);
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("in_process"), std::string::npos) << pacs_->err();
}

TEST_F(PacsEndToEndTest, StudyTheServerRefusesIsReportedFailedAtOnce) {
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port);
  // An MR image: the chest model takes none of it, the server answers INVALID_ARGUMENT; waiting will not help.
  const std::string mr = edit_dicom(read_bytes(shared_path("data/dicom/chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm")),
                                    {{DCM_Modality, "MR"}});
  auto posted = orthanc_.client->Post("/instances", mr, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(60), [&] {
    auto state = load_state(dir_->file("pacs-state.json"));
    return state.ok() && state->failed.count(study) == 1;
  })) << diagnostics();
  auto state = load_state(dir_->file("pacs-state.json"));
  EXPECT_EQ(state->failed.at(study).attempts, 1);
  EXPECT_NE(state->failed.at(study).last_error.find("GenerateReport"), std::string::npos);
  EXPECT_TRUE(state->pending.empty());
  EXPECT_TRUE(orthanc_.sr_instances(study).empty());
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("giving up on " + study), std::string::npos) << pacs_->err();
}

TEST(DicomSendTest, FailuresAreReportedWithTheAttemptCount) {
  const int port = free_port();  // nothing listens there
  pipeline::SrOptions options;
  const auto sr = pipeline::write_report_sr({chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm")}, {"x ."}, options);
  ASSERT_TRUE(sr.ok()) << sr.status();
  pipeline::DicomPeer peer;
  peer.port = port;
  peer.connect_timeout_s = 2;
  const pipeline::RetryPolicy retry{3, 0.05, 0.1};
  const absl::Status refused = pipeline::c_store(*sr, peer, retry);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_NE(refused.message().find("after 3 attempts"), std::string::npos) << refused;

  pipeline::StowTarget stow;
  stow.base_url = "http://127.0.0.1:" + std::to_string(port) + "/dicom-web";
  stow.timeout_s = 2;
  const absl::Status unreachable = pipeline::stow_rs(*sr, stow, retry);
  EXPECT_EQ(unreachable.code(), absl::StatusCode::kUnavailable) << unreachable;
  EXPECT_NE(unreachable.message().find("after 3 attempts"), std::string::npos) << unreachable;

  stow.base_url = "ftp://example/dicom-web";
  EXPECT_EQ(pipeline::stow_rs(*sr, stow, retry).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::c_store("not dicom", peer, retry).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PacsEndToEndTest, StoreFailsWhileOrthancsDicomPortIsDownThenSucceeds) {
  // Orthanc without its DICOM server: the study arrives over REST, becomes stable, is reported, but the
  // C-STORE of the SR is refused. cmn-pacs must keep retrying; when Orthanc comes back with DICOM, the SR lands.
  ASSERT_TRUE(orthanc_.start(/*dicom_enabled=*/false)) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port);
  const std::string image = read_bytes(shared_path("data/dicom/chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  // Wait until cmn-pacs has failed at least twice on the store.
  ASSERT_TRUE(wait_for(std::chrono::seconds(60), [&] {
    auto state = load_state(dir_->file("pacs-state.json"));
    return state.ok() && !state->pending.empty() && state->pending.begin()->second.attempts >= 2;
  })) << diagnostics();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok());
  EXPECT_NE(state->pending.begin()->second.last_error.find("C-STORE"), std::string::npos)
      << state->pending.begin()->second.last_error;
  const std::string study = state->pending.begin()->first;
  EXPECT_TRUE(orthanc_.sr_instances(study).empty());

  // Orthanc back with its DICOM port (same storage, same ports).
  orthanc_.process->stop();
  ASSERT_TRUE(orthanc_.start(/*dicom_enabled=*/true)) << read_bytes(dir_->file("orthanc.err"));
  ASSERT_TRUE(wait_for(std::chrono::seconds(60), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  std::set<std::string> uploaded = {"1.2.392.200036.9125.0.19950720112207"};
  std::this_thread::sleep_for(std::chrono::seconds(3));
  expect_sr_matches_server(study, server_port, uploaded);
  pacs_->stop();
  auto final_state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(final_state.ok());
  EXPECT_TRUE(final_state->pending.empty());
  EXPECT_EQ(final_state->done.size(), 1u);
}

// --fhir-url: after the SR, the report goes to a FHIR server (a recording HTTP server on loopback) as a valid
// DiagnosticReport. The FHIR server fails the first attempt: the study is retried, the report arrives, and the
// study still holds one SR.
TEST_F(PacsEndToEndTest, FhirUrlPostsTheReportAfterTheSrAndRetriesWithoutASecondSr) {
  const std::string missing = cmn::testing::fhir_validator_missing();
  ASSERT_TRUE(missing.empty()) << missing;
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  cmn::testing::LoopbackFhirServer fhir;
  fhir.script({503, 503});  // both tries of the first attempt (store_retry: 2 tries)
  start_pacs(server_port, {"--fhir-url", fhir.base_url("/fhir")});
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(90), [&] { return fhir.received().size() >= 3; })) << diagnostics();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the SR's arrival must not report the study again
  pacs_->stop();

  const auto got = fhir.received();
  ASSERT_EQ(got.size(), 3u) << diagnostics();
  const auto srs = orthanc_.sr_instances(study);
  ASSERT_EQ(srs.size(), 1u) << "a FHIR retry must not store a second SR";
  auto sr = pipeline::read_report_sr(orthanc_.file(srs[0]));
  ASSERT_TRUE(sr.ok()) << sr.status();
  std::set<std::string> identifiers;
  for (const auto& g : got) {
    EXPECT_EQ(g.path, "/fhir/DiagnosticReport");
    EXPECT_EQ(g.content_type, "application/fhir+json");
    identifiers.insert(json::parse(g.body)["identifier"][0]["value"].get<std::string>());
  }
  EXPECT_EQ(identifiers.size(), 1u) << "the same report of the same study keeps its identifier";
  const auto v = cmn::testing::validate_fhir_json(got.back().body);
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  const json report = json::parse(got.back().body);
  EXPECT_EQ(report["imagingStudy"][0]["identifier"]["value"], "urn:oid:" + sr->study_instance_uid);
  const std::string conclusion = report["conclusion"];
  ASSERT_FALSE(sr->text().empty());
  ASSERT_GE(conclusion.size(), sr->text().size());
  EXPECT_EQ(conclusion.substr(conclusion.size() - sr->text().size()), sr->text()) << "the SR's text";
  EXPECT_FALSE(report.contains("subject"));

  // Logs: the retry and the success, and no study UID or patient attribute.
  const std::string logs = pacs_->err() + pacs_->out();
  EXPECT_NE(logs.find("HTTP 503"), std::string::npos) << logs;
  EXPECT_NE(logs.find("fhir=posted"), std::string::npos) << logs;
  EXPECT_EQ(logs.find(sr->study_instance_uid), std::string::npos) << logs;
  auto file = parse(image);
  for (const DcmTagKey& key : {DCM_PatientName, DCM_PatientID}) {
    const std::string value = get(file->getDataset(), key);
    if (value.size() >= 4) {
      EXPECT_EQ(logs.find(value), std::string::npos) << "cmn-pacs log contains a patient attribute";
    }
  }
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), 1u);
  EXPECT_TRUE(state->failed.empty());
}

}  // namespace
}  // namespace cmn::pacs::testing
