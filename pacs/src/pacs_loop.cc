#include "cmn/pacs/pacs_loop.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <openssl/sha.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cmn/common/durable_write.h"
#include "cmn/v1/report_service.grpc.pb.h"
#include "in_process.h"

namespace cmn::pacs {

using nlohmann::json;

namespace {

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json pending_json(const PendingStudy& p) {
  return {{"orthanc_id", p.orthanc_id}, {"attempts", p.attempts}, {"next_try_unix", p.next_try_unix},
          {"last_error", p.last_error}};
}

PendingStudy pending_from(const json& j) {
  PendingStudy p;
  p.orthanc_id = j.at("orthanc_id").get<std::string>();
  p.attempts = j.value("attempts", 0);
  p.next_try_unix = j.value("next_try_unix", 0.0);
  p.last_error = j.value("last_error", std::string());
  return p;
}

// Splits "http://host:port/prefix" for httplib.
bool split_url(const std::string& url, std::string* origin, std::string* path) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos || url.rfind("http://", 0) != 0) return false;
  const size_t slash = url.find('/', scheme + 3);
  *origin = url.substr(0, slash);
  *path = slash == std::string::npos ? "" : url.substr(slash);
  while (!path->empty() && path->back() == '/') path->pop_back();
  return origin->size() > scheme + 3;
}

// Whether another attempt may succeed: the network, a busy or restarting server or PACS. A study the server
// refuses (no usable image, wrong modality), a PACS that refuses the SR, or a study deleted from Orthanc will
// not get better by waiting: it goes to `failed` at once (still logged and kept in the state file).
bool retryable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return false;
    default:
      return true;
  }
}

}  // namespace

std::string study_log_name(const std::string& study_instance_uid) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(study_instance_uid.data()), study_instance_uid.size(), digest);
  std::string hex = "study#";
  for (int i = 0; i < 6; ++i) absl::StrAppend(&hex, absl::StrFormat("%02x", digest[i]));
  return hex;
}

absl::StatusOr<PacsState> load_state(const std::string& path) {
  PacsState state;
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) {
    if (!std::filesystem::exists(path)) return state;
    return absl::PermissionDeniedError(absl::StrCat("state file '", path, "' cannot be read"));
  }
  try {
    const json j = json::parse(in);
    state.last_change = j.at("last_change").get<int64_t>();
    for (const auto& key : j.at("done")) state.done.insert(key.get<std::string>());
    for (const auto& p : j.at("pending")) {
      PendingStudy s = pending_from(p);
      state.pending[s.orthanc_id] = s;
    }
    for (const auto& p : j.at("failed")) {
      PendingStudy s = pending_from(p);
      state.failed[s.orthanc_id] = s;
    }
    if (j.contains("settling")) {  // absent in state files of earlier versions
      for (const auto& id : j.at("settling")) state.settling.insert(id.get<std::string>());
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("state file '", path, "' is corrupt: ", e.what()));
  }
  return state;
}

absl::Status save_state(const std::string& path, const PacsState& state) {
  json j;
  j["last_change"] = state.last_change;
  j["done"] = json::array();
  for (const auto& key : state.done) j["done"].push_back(key);
  j["pending"] = json::array();
  for (const auto& [id, p] : state.pending) j["pending"].push_back(pending_json(p));
  j["failed"] = json::array();
  for (const auto& [id, p] : state.failed) j["failed"].push_back(pending_json(p));
  j["settling"] = json::array();
  for (const auto& id : state.settling) j["settling"].push_back(id);
  // durable_write.h: the cursor on disk is the old one or the new one, never a torn file.
  const std::string error = durable::write_file(path, j.dump(2) + "\n");
  if (!error.empty()) return absl::InternalError(absl::StrCat("state file: ", error));
  return absl::OkStatus();
}

struct PacsLoop::Impl {
  std::unique_ptr<httplib::Client> orthanc;
  std::string orthanc_prefix;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ReportService::Stub> stub;
  std::string model_key;  // "<name> <version>" of the server's model, once known
  std::unique_ptr<InProcessReporter> in_process;  // --bundle: the model runs here

  absl::StatusOr<std::string> get(const std::string& path) {
    auto r = orthanc->Get(orthanc_prefix + path);
    if (!r) return absl::UnavailableError(absl::StrCat("Orthanc GET ", path, ": ", httplib::to_string(r.error())));
    if (r->status == 404) return absl::NotFoundError(absl::StrCat("Orthanc GET ", path, ": HTTP 404 (deleted?)"));
    if (r->status != 200) {
      return absl::UnavailableError(absl::StrCat("Orthanc GET ", path, ": HTTP ", r->status));
    }
    return r->body;
  }
  absl::StatusOr<json> get_json(const std::string& path) {
    auto body = get(path);
    if (!body.ok()) return body.status();
    try {
      return json::parse(*body);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("Orthanc GET ", path, ": not JSON: ", e.what()));
    }
  }
  void add_auth(grpc::ClientContext* context, const PacsOptions& options) {
    if (!options.server_token.empty()) context->AddMetadata("authorization", "Bearer " + options.server_token);
  }
};

PacsLoop::PacsLoop(PacsOptions options) : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}
PacsLoop::~PacsLoop() = default;

absl::Status PacsLoop::init() {
  std::string origin;
  if (!split_url(options_.orthanc_url, &origin, &impl_->orthanc_prefix)) {
    return absl::InvalidArgumentError(absl::StrCat("orthanc URL '", options_.orthanc_url,
                                                   "' is not http://host[:port][/prefix]"));
  }
  if (options_.store != "dicom" && options_.store != "stow") {
    return absl::InvalidArgumentError(absl::StrCat("store '", options_.store, "': must be dicom or stow"));
  }
  if (options_.max_attempts < 1) return absl::InvalidArgumentError("max_attempts must be >= 1");
  impl_->orthanc = std::make_unique<httplib::Client>(origin);
  impl_->orthanc->set_connection_timeout(10, 0);
  impl_->orthanc->set_read_timeout(60, 0);
  if (!options_.orthanc_user.empty()) impl_->orthanc->set_basic_auth(options_.orthanc_user, options_.orthanc_password);
  if (!options_.bundle.empty()) {
    auto reporter = InProcessReporter::load(options_.bundle, options_.threads, options_.sr);
    if (!reporter.ok()) return reporter.status();
    impl_->in_process = std::move(*reporter);
  }
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  impl_->channel = grpc::CreateCustomChannel(options_.server, grpc::InsecureChannelCredentials(), args);
  impl_->stub = v1::ReportService::NewStub(impl_->channel);
  auto state = load_state(options_.state_file);
  if (!state.ok()) return state.status();
  state_ = std::move(*state);
  LOG(INFO) << "cmn-pacs: state " << options_.state_file << " last_change=" << state_.last_change
            << " done=" << state_.done.size() << " pending=" << state_.pending.size()
            << " failed=" << state_.failed.size();
  return absl::OkStatus();
}

absl::Status PacsLoop::process_study(const std::string& orthanc_id, PassResult* result) {
  // 1. The model the server runs (its version is half of the idempotency key).
  if (impl_->in_process) impl_->model_key = impl_->in_process->model_key();
  if (impl_->model_key.empty()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    impl_->add_auth(&context, options_);
    v1::ModelInfo info;
    const grpc::Status s = impl_->stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("cmn-server GetModelInfo: ", s.error_message()));
    // As the SR writes its ManufacturerModelName (pipeline/dicom_sr.h).
    impl_->model_key = info.version().empty() ? info.name() : absl::StrCat(info.name(), " ", info.version());
  }
  // 2. The study in Orthanc.
  auto study = impl_->get_json("/studies/" + orthanc_id);
  if (!study.ok()) return study.status();
  const std::string uid = study->value("/MainDicomTags/StudyInstanceUID"_json_pointer, std::string());
  if (uid.empty()) return absl::FailedPreconditionError("the study has no StudyInstanceUID in Orthanc");
  const std::string key = absl::StrCat(uid, "|", impl_->model_key);
  const std::string name = study_log_name(uid);
  if (state_.done.count(key) > 0) {
    ++result->skipped_done;
    VLOG(1) << "cmn-pacs: " << orthanc_id << " " << name << " already reported by " << impl_->model_key;
    return absl::OkStatus();
  }
  // An SR of this model already in the study (stored by a run that stopped before saving its state, or by another
  // cmn-pacs): done, unless the FHIR report may still be owed (then it is made again, without a second SR).
  // The SR's ManufacturerModelName is "<model name> <version>" (pipeline/dicom_sr.h).
  const bool with_fhir = !options_.fhir.base_url.empty();
  bool sr_present = false;
  auto series = impl_->get_json("/studies/" + orthanc_id + "/series");
  if (!series.ok()) return series.status();
  for (const auto& s : *series) {
    if (s.value("/MainDicomTags/Modality"_json_pointer, std::string()) != "SR") continue;
    for (const auto& instance : s.value("Instances", json::array())) {
      auto tags = impl_->get_json("/instances/" + instance.get<std::string>() + "/simplified-tags");
      if (!tags.ok()) return tags.status();
      if (tags->value("ManufacturerModelName", std::string()) == impl_->model_key) sr_present = true;
      if (sr_present && !with_fhir) {
        state_.done.insert(key);
        ++result->skipped_done;
        LOG(INFO) << "cmn-pacs: " << orthanc_id << " " << name << " already holds an SR of " << impl_->model_key;
        return absl::OkStatus();
      }
    }
  }
  auto instances = impl_->get_json("/studies/" + orthanc_id + "/instances");
  if (!instances.ok()) return instances.status();
  v1::GenerateReportRequest request;
  request.mutable_output()->set_dicom_sr(!sr_present);
  request.mutable_output()->set_fhir(with_fhir);
  request.set_request_id(orthanc_id);
  for (const auto& instance : *instances) {
    const std::string id = instance.value("ID", std::string());
    auto bytes = impl_->get("/instances/" + id + "/file");
    if (!bytes.ok()) return bytes.status();
    request.add_instances()->set_data(std::move(*bytes));
  }
  if (request.instances_size() == 0) return absl::FailedPreconditionError("the study has no instances");

  // 3. The report and its SR: from cmn-server, or from the model in this process.
  const int instance_count = request.instances_size();
  std::string sr_bytes, fhir_json;
  int slots = 0;
  if (impl_->in_process) {
    std::vector<std::string> bytes;
    for (auto& instance : *request.mutable_instances()) bytes.push_back(std::move(*instance.mutable_data()));
    auto report = impl_->in_process->report(bytes);
    if (!report.ok()) {
      return absl::Status(report.status().code(), absl::StrCat("in-process report: ", report.status().message()));
    }
    sr_bytes = std::move(report->dicom_sr);
    fhir_json = std::move(report->fhir);
    slots = report->slots;
  } else {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(options_.server_deadline_s * 1000)));
    impl_->add_auth(&context, options_);
    v1::GenerateReportResponse response;
    const grpc::Status s = impl_->stub->GenerateReport(&context, request, &response);
    if (!s.ok()) {
      const auto code = static_cast<absl::StatusCode>(s.error_code());
      return absl::Status(code, absl::StrCat("cmn-server GenerateReport: ", s.error_message()));
    }
    if (!sr_present && response.dicom_sr().empty()) return absl::InternalError("cmn-server returned no DICOM SR");
    if (with_fhir && response.fhir().empty()) {
      return absl::InternalError("cmn-server returned no FHIR report (a server without output.fhir?)");
    }
    sr_bytes = std::move(*response.mutable_dicom_sr());
    fhir_json = std::move(*response.mutable_fhir());
    slots = response.slots_size();
  }

  // 4. Back into the study (unless an SR of this model is there already), then to the FHIR server.
  if (!sr_present) {
    const absl::Status stored = options_.store == "stow"
                                    ? pipeline::stow_rs(sr_bytes, options_.stow, options_.store_retry)
                                    : pipeline::c_store(sr_bytes, options_.dicom, options_.store_retry);
    if (!stored.ok()) return stored;
  }
  if (with_fhir) {
    const absl::Status posted = pipeline::post_fhir_report(fhir_json, options_.fhir, options_.store_retry);
    if (!posted.ok()) return posted;
    ++result->fhir_posted;
  }
  state_.done.insert(key);
  ++result->reported;
  LOG(INFO) << "cmn-pacs: reported " << orthanc_id << " " << name << " instances=" << instance_count
            << " slots=" << slots << " model=\"" << impl_->model_key << "\" store="
            << (sr_present ? "already" : options_.store) << (with_fhir ? " fhir=posted" : "")
            << (impl_->in_process ? " in_process" : "");
  return absl::OkStatus();
}

absl::StatusOr<PassResult> PacsLoop::run_once() {
  PassResult result;
  // 1. New stable studies from the change feed; each is pending before the cursor moves past it.
  for (;;) {
    auto changes = impl_->get_json(absl::StrCat("/changes?since=", state_.last_change, "&limit=",
                                                options_.changes_batch));
    if (!changes.ok()) return changes.status();
    bool any = false;
    for (const auto& change : changes->value("Changes", json::array())) {
      const std::string type = change.value("ChangeType", std::string());
      if (type == "NewStudy") {
        const std::string id = change.value("ID", std::string());
        if (!id.empty()) state_.settling.insert(id);
      }
      if (type == "StableStudy") {
        const std::string id = change.value("ID", std::string());
        state_.settling.erase(id);
        // A failed study that becomes stable again has new instances: it gets a fresh set of attempts.
        if (!id.empty() && state_.pending.count(id) == 0) {
          state_.failed.erase(id);
          state_.pending[id] = PendingStudy{id, 0, 0, ""};
          ++result.new_stable_studies;
        }
      }
      any = true;
    }
    const int64_t last = changes->value("Last", state_.last_change);
    const bool moved = last != state_.last_change;
    state_.last_change = last;
    if (any || moved) {
      if (absl::Status saved = save_state(options_.state_file, state_); !saved.ok()) return saved;
    }
    if (changes->value("Done", true) || !moved) break;
  }
  // 1b. Studies seen new but never announced stable: Orthanc forgets them when it restarts (see PacsState).
  bool settled_any = false;
  for (const std::string& id : std::vector<std::string>(state_.settling.begin(), state_.settling.end())) {
    auto study = impl_->get_json("/studies/" + id);
    if (study.status().code() == absl::StatusCode::kNotFound) {  // deleted while it settled
      state_.settling.erase(id);
      settled_any = true;
      continue;
    }
    if (!study.ok() || !study->value("IsStable", false)) continue;  // still settling, or ask next pass
    state_.settling.erase(id);
    settled_any = true;
    if (state_.pending.count(id) == 0) {
      LOG(INFO) << "cmn-pacs: " << id << " is stable but was never announced (Orthanc restarted?): taking it";
      state_.failed.erase(id);
      state_.pending[id] = PendingStudy{id, 0, 0, ""};
      ++result.new_stable_studies;
    }
  }
  if (settled_any) {
    if (absl::Status saved = save_state(options_.state_file, state_); !saved.ok()) return saved;
  }
  // 2. Every pending study that is due.
  const double now = now_unix();
  std::vector<std::string> due;
  for (const auto& [id, p] : state_.pending) {
    if (p.next_try_unix <= now) due.push_back(id);
  }
  // The server may have been restarted with another model since the last pass: ask again.
  if (!due.empty()) impl_->model_key.clear();
  for (const std::string& id : due) {
    const absl::Status status = process_study(id, &result);
    if (status.ok()) {
      state_.pending.erase(id);
    } else {
      ++result.failed_attempts;
      PendingStudy& p = state_.pending[id];
      ++p.attempts;
      p.last_error = std::string(status.message());
      const double backoff =
          std::min(options_.retry_max_s, options_.retry_initial_s * static_cast<double>(1LL << std::min(p.attempts - 1, 30)));
      p.next_try_unix = now_unix() + backoff;
      if (p.attempts >= options_.max_attempts || !retryable(status)) {
        LOG(ERROR) << "cmn-pacs: giving up on " << id << " after " << p.attempts << " attempt(s), "
                   << absl::StatusCodeToString(status.code()) << ": " << p.last_error;
        state_.failed[id] = p;
        state_.pending.erase(id);
      } else {
        LOG(WARNING) << "cmn-pacs: " << id << " attempt " << p.attempts << " failed (retry in " << backoff
                     << " s): " << p.last_error;
      }
    }
    if (absl::Status saved = save_state(options_.state_file, state_); !saved.ok()) return saved;
  }
  return result;
}

void PacsLoop::run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    auto pass = run_once();
    if (!pass.ok()) LOG(WARNING) << "cmn-pacs: pass failed (retrying): " << pass.status().message();
    const bool busy = pass.ok() && (pass->reported > 0 || pass->new_stable_studies > 0);
    if (busy) continue;
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(options_.poll_interval_s * 1000));
    while (!stop.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

}  // namespace cmn::pacs
