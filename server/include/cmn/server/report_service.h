#pragma once
// cmn.v1.ReportService on the synchronous gRPC API: each call runs on a gRPC handler thread, which
// authenticates, checks limits, decodes the DICOM instances (at most engine.preprocess_threads at once), and
// hands the study to the Engine, waiting there for the report, the deadline or a cancellation.
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
#include "cmn/engine/replica.h"
#include "cmn/model/decoding_options.h"
#include "cmn/preprocessing/dicom.h"
#include "cmn/server/auth.h"
#include "cmn/server/config.h"
#include "cmn/server/engine.h"
#include "cmn/server/metrics.h"
#include "cmn/server/request_intake.h"
#include "cmn/server/serving_model.h"
#include "cmn/v1/report_service.grpc.pb.h"

namespace cmn::server {

// Everything a call needs besides the engine: fixed at start-up.
struct ServiceOptions {
  LimitsOptions limits;
  EngineOptions engine;
  StudyConfig study;
  LoggingOptions logging;
  pipeline::SrOptions sr;                 // the DICOM SR of output.dicom_sr (model fields: from the bundle)
  int64_t max_receive_message_bytes = 0;  // reported in ModelInfo.limits
};

// One model as the service serves it, fixed once made. A hot reload makes a new one and swaps it in; each call
// takes the current one when it starts and keeps it (a shared_ptr) to its end, so a call in flight during a swap
// finishes on the model it started with (its replica, tokenizer, identity), and its response names that model.
struct ServedModel {
  ServingModel serving;                        // bundle info + engine::Model (tokenizer, identity)
  std::shared_ptr<engine::Replica> replica;    // the Engine runs the call's study on this one
  preprocessing::StudyOptions study_options;   // from the bundle's image options and the server's study config
  v1::ModelInfo info;                          // GetModelInfo and each response's `model` (without limits)
};

// Words of the decoded report split after each "." token (one definition, shared with the SR writers).
using model::split_sentences;

class ReportServiceImpl final : public v1::ReportService::Service {
 public:
  // `model` supplies the tokenizer and the identity, `replica` runs its weights in `engine`; `auth` may be null
  // (no authentication). The pointers must outlive the service.
  ReportServiceImpl(ServingModel model, std::shared_ptr<engine::Replica> replica, Engine* engine, Metrics* metrics,
                    const TokenAuthenticator* auth, const ServiceOptions& options);

  grpc::Status GenerateReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                              v1::GenerateReportResponse* response) override;
  grpc::Status StreamReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                            grpc::ServerWriter<v1::StreamReportResponse>* writer) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;
  // Behind the same authentication as the other calls: `reload` (set by the ReportServer) loads, warms and swaps.
  grpc::Status ReloadModel(grpc::ServerContext* context, const v1::ReloadModelRequest* request,
                           v1::ModelInfo* response) override;

  // The model calls start on now.
  std::shared_ptr<const ServedModel> current() const;
  v1::ModelInfo model_info() const { return current()->info; }
  // A ServedModel of `model` + `replica` under this service's options (study options, ModelInfo with limits).
  std::shared_ptr<const ServedModel> make_served(ServingModel model, std::shared_ptr<engine::Replica> replica) const;
  // From the next call on, `next` serves; calls in flight keep theirs.
  void swap(std::shared_ptr<const ServedModel> next);
  // What ReloadModel calls: the bundle directory ("" = the configured model, read again) -> the new ModelInfo.
  void set_reload(std::function<absl::StatusOr<v1::ModelInfo>(const std::string& bundle)> reload) {
    reload_ = std::move(reload);
  }

 private:
  // GenerateReport and StreamReport: `on_progress` is empty for the unary call.
  absl::Status generate(const ServedModel& served, grpc::ServerContext* context, const v1::GenerateReportRequest& request,
                        v1::GenerateReportResponse* response,
                        const std::function<bool(const JobProgress&)>& on_progress);
  // DICOM bytes -> assembled study (slots, skipped, images), at most preprocess_threads at once.
  absl::StatusOr<preprocessing::AssembledStudy> preprocess(const ServedModel& served, grpc::ServerContext* context,
                                                           const v1::GenerateReportRequest& request,
                                                           std::chrono::steady_clock::time_point deadline,
                                                           int64_t max_decode_bytes);
  // output.dicom_sr / output.findings_sr: the report as a DICOM SR (pipeline/dicom_sr.h) and its coded findings
  // (pipeline/findings_sr.h) over the instances that fill the slots.
  absl::Status fill_dicom_sr(const ServedModel& served, const preprocessing::AssembledStudy& study,
                             const v1::GenerateReportRequest& request, v1::GenerateReportResponse* response) const;
  // Counts, times and logs a finished call; returns the gRPC status.
  grpc::Status finish(const char* method, grpc::ServerContext* context, const std::string& request_id,
                      std::chrono::steady_clock::time_point start, const absl::Status& status,
                      const v1::GenerateReportResponse* response);

  mutable std::mutex current_mutex_;
  std::shared_ptr<const ServedModel> current_;  // guarded by current_mutex_
  std::function<absl::StatusOr<v1::ModelInfo>(const std::string&)> reload_;
  Engine* engine_;
  Metrics* metrics_;
  const TokenAuthenticator* auth_;
  ServiceOptions options_;

  std::mutex preprocess_mutex_;
  std::condition_variable preprocess_free_;
  int preprocess_running_ = 0;
};

}  // namespace cmn::server
