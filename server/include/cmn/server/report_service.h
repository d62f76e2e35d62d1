#pragma once
// cmn.v1.ReportService on the synchronous gRPC API: each call runs on a gRPC handler thread, which
// authenticates, checks limits, decodes the DICOM instances (at most engine.preprocess_threads at once), and
// hands the study to the Engine, waiting there for the report, the deadline or a cancellation.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cmn/engine/model.h"
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

// Words of the decoded report split after each "." token (one definition, shared with the SR writers).
using model::split_sentences;

class ReportServiceImpl final : public v1::ReportService::Service {
 public:
  // `model` supplies the tokenizer and the identity (its weights run in `engine`); `auth` may be null
  // (no authentication). All pointers must outlive the service.
  ReportServiceImpl(const ServingModel* model, Engine* engine, Metrics* metrics, const TokenAuthenticator* auth,
                    const ServiceOptions& options);

  grpc::Status GenerateReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                              v1::GenerateReportResponse* response) override;
  grpc::Status StreamReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                            grpc::ServerWriter<v1::StreamReportResponse>* writer) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

  const v1::ModelInfo& model_info() const { return model_info_; }

 private:
  // GenerateReport and StreamReport: `on_progress` is empty for the unary call.
  absl::Status generate(grpc::ServerContext* context, const v1::GenerateReportRequest& request,
                        v1::GenerateReportResponse* response,
                        const std::function<bool(const JobProgress&)>& on_progress);
  // DICOM bytes -> assembled study (slots, skipped, images), at most preprocess_threads at once.
  absl::StatusOr<preprocessing::AssembledStudy> preprocess(grpc::ServerContext* context,
                                                           const v1::GenerateReportRequest& request,
                                                           std::chrono::steady_clock::time_point deadline,
                                                           int64_t max_decode_bytes);
  // output.dicom_sr / output.findings_sr: the report as a DICOM SR (pipeline/dicom_sr.h) and its coded findings
  // (pipeline/findings_sr.h) over the instances that fill the slots.
  absl::Status fill_dicom_sr(const preprocessing::AssembledStudy& study, const v1::GenerateReportRequest& request,
                             v1::GenerateReportResponse* response) const;
  // Counts, times and logs a finished call; returns the gRPC status.
  grpc::Status finish(const char* method, grpc::ServerContext* context, const std::string& request_id,
                      std::chrono::steady_clock::time_point start, const absl::Status& status,
                      const v1::GenerateReportResponse* response);

  const ServingModel* model_;
  Engine* engine_;
  Metrics* metrics_;
  const TokenAuthenticator* auth_;
  ServiceOptions options_;
  preprocessing::StudyOptions study_options_;
  v1::ModelInfo model_info_;

  std::mutex preprocess_mutex_;
  std::condition_variable preprocess_free_;
  int preprocess_running_ = 0;
};

}  // namespace cmn::server
