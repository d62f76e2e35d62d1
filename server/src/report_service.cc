#include "cmn/server/report_service.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmn/common/status_macros.h"
#include "cmn/pipeline/attention.h"
#include "cmn/pipeline/consistency.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/findings_sr.h"
#include "cmn/pipeline/fhir_report.h"
#include "cmn/server/request_intake.h"
#include "cmn/server/status.h"

namespace cmn::server {

using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

v1::DecodingMethod method_enum(model::DecodingMethod method) {
  switch (method) {
    case model::DecodingMethod::kGreedy: return v1::DECODING_METHOD_GREEDY;
    case model::DecodingMethod::kSample: return v1::DECODING_METHOD_SAMPLE;
    case model::DecodingMethod::kBeamSearch: break;
  }
  return v1::DECODING_METHOD_BEAM_SEARCH;
}

void fill_settings(const model::DecodingOptions& d, v1::DecodingSettings* out) {
  out->set_method(method_enum(d.method));
  out->set_beam_size(static_cast<int32_t>(d.beam_size));
  out->set_max_length(static_cast<int32_t>(d.max_length));
  out->set_temperature(d.temperature);
  out->set_seed(d.seed);
}

// The call's deadline on the steady clock (gRPC gives it on the system clock; "none" is far in the future).
Clock::time_point steady_deadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline - now > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(deadline - now);
}

// A caller-given correlation id, reduced to what is safe in a log line.
std::string safe_request_id(const std::string& id) {
  std::string out;
  for (char c : id) {
    if (out.size() >= 64) break;
    if (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._:-", c) != nullptr) out += c;
  }
  return out;
}

// The decoded text: report, sentences, ids (without the end token), log-probs (when asked) and their sum.
void fill_text(const engine::StudyResult& h, const model::Tokenizer& tokenizer, bool token_scores,
               v1::GenerateReportResponse* response) {
  std::vector<int64_t> ids = h.ids;
  if (!ids.empty() && ids.back() == 0) ids.pop_back();
  const std::vector<std::string> words = tokenizer.words(ids);
  response->set_report(absl::StrJoin(words, " "));  // = tokenizer.decode(ids), without its throw on <unk>
  for (auto& s : split_sentences(words)) response->add_sentences(std::move(s));
  for (int64_t id : ids) response->add_token_ids(id);
  double log_prob = 0;
  for (float lp : h.token_log_probs) {
    log_prob += lp;
    if (token_scores) response->add_token_log_probs(lp);
  }
  response->set_log_prob(log_prob);
  if (h.consistency) response->set_consistency(*h.consistency);
}

// Which instance fills which view slot and which were skipped, under the caller's names.
void fill_study(const preprocessing::AssembledStudy& study, const v1::GenerateReportRequest& request,
                v1::GenerateReportResponse* response) {
  auto source_name = [&](size_t input, const std::string& source) {
    // The caller's name for request.instances(input), when given; else preprocess()'s "instance[i]".
    const int index = static_cast<int>(input);
    if (index < request.instances_size() && !request.instances(index).name().empty()) {
      return request.instances(index).name();
    }
    return source;
  };
  response->set_study_instance_uid(study.study_instance_uid);
  for (size_t k = 0; k < study.slots.size(); ++k) {
    const auto& slot_info = study.slots[k];
    auto* s = response->add_slots();
    s->set_slot(static_cast<int32_t>(slot_info.slot));
    s->set_source(source_name(study.slot_inputs[k], slot_info.instance.source));
    s->set_sop_instance_uid(slot_info.instance.sop_instance_uid);
    s->set_series_instance_uid(slot_info.instance.series_instance_uid);
    s->set_view(preprocessing::view_name(slot_info.instance.view));
    s->set_reason(slot_info.reason);
  }
  for (const auto& skipped : study.skipped) {
    auto* s = response->add_skipped();
    s->set_source(source_name(skipped.input, skipped.instance.source));
    s->set_sop_instance_uid(skipped.instance.sop_instance_uid);
    s->set_series_instance_uid(skipped.instance.series_instance_uid);
    s->set_reason(skipped.reason);
  }
}

}  // namespace

ReportServiceImpl::ReportServiceImpl(ServingModel model, std::shared_ptr<engine::Replica> replica, Engine* engine,
                                     Metrics* metrics, const TokenAuthenticator* auth, const ServiceOptions& options)
    : engine_(engine), metrics_(metrics), auth_(auth), options_(options) {
  current_ = make_served(std::move(model), std::move(replica));
}

std::shared_ptr<const ServedModel> ReportServiceImpl::current() const {
  std::lock_guard<std::mutex> lock(current_mutex_);
  return current_;
}

void ReportServiceImpl::swap(std::shared_ptr<const ServedModel> next) {
  std::lock_guard<std::mutex> lock(current_mutex_);
  current_ = std::move(next);
}

std::shared_ptr<const ServedModel> ReportServiceImpl::make_served(ServingModel model,
                                                                  std::shared_ptr<engine::Replica> replica) const {
  auto served = std::make_shared<ServedModel>();
  served->serving = std::move(model);
  served->replica = std::move(replica);
  const auto& info = served->serving.info;
  served->study_options = study_options_for(info, options_.study, options_.limits);
  v1::ModelInfo& out = served->info;
  out.set_name(info.name);
  out.set_version(info.version);
  out.set_digest(info.digest);
  out.set_untrained(info.untrained);
  out.set_intended_use(info.intended_use);
  out.set_views(static_cast<int32_t>(info.config.effective_views()));
  out.set_vocab_size(static_cast<int32_t>(served->serving.model->tokenizer().vocab_size()));
  if (served->replica != nullptr) out.set_precision(model::precision_name(served->replica->precision()));
  std::vector<std::string> ignored;
  auto defaults = resolve_decoding(info.config, v1::DecodingOverrides(), options_.limits, &ignored);
  if (defaults.ok()) fill_settings(*defaults, out.mutable_default_decoding());
  auto* limits = out.mutable_limits();
  limits->set_max_instances(options_.limits.max_instances);
  limits->set_max_pixels(options_.limits.max_pixels);
  limits->set_max_beam_size(options_.limits.max_beam_size);
  limits->set_max_length(options_.limits.max_length);
  limits->set_max_receive_message_bytes(options_.max_receive_message_bytes);
  return served;
}

grpc::Status ReportServiceImpl::GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest*,
                                             v1::ModelInfo* response) {
  const auto start = Clock::now();
  absl::Status status;
  if (auth_ != nullptr) status = auth_->check(context->client_metadata());
  if (status.ok()) *response = model_info();
  return finish("GetModelInfo", context, "", start, status, nullptr);
}

grpc::Status ReportServiceImpl::ReloadModel(grpc::ServerContext* context, const v1::ReloadModelRequest* request,
                                            v1::ModelInfo* response) {
  const auto start = Clock::now();
  absl::Status status;
  if (auth_ != nullptr) status = auth_->check(context->client_metadata());
  if (status.ok() && !reload_) status = absl::UnimplementedError("this server cannot reload its model");
  if (status.ok()) {
    auto info = reload_(request->bundle());
    if (info.ok()) {
      *response = std::move(*info);
    } else {
      status = info.status();
    }
  }
  return finish("ReloadModel", context, "", start, status, nullptr);
}

grpc::Status ReportServiceImpl::GenerateReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                                               v1::GenerateReportResponse* response) {
  const auto start = Clock::now();
  const auto served = current();
  const absl::Status status = generate(*served, context, *request, response, nullptr);
  if (!status.ok()) response->Clear();
  return finish("GenerateReport", context, request->request_id(), start, status, response);
}

grpc::Status ReportServiceImpl::StreamReport(grpc::ServerContext* context, const v1::GenerateReportRequest* request,
                                             grpc::ServerWriter<v1::StreamReportResponse>* writer) {
  const auto start = Clock::now();
  const auto served = current();
  const auto& tokenizer = served->serving.model->tokenizer();
  size_t sentences_sent = 0;
  auto on_progress = [&](const JobProgress& p) {
    v1::StreamReportResponse message;
    auto* progress = message.mutable_progress();
    for (size_t i = p.new_from; i < p.stable_ids.size(); ++i) progress->add_token_ids(p.stable_ids[i]);
    const std::vector<std::string> words = tokenizer.words(p.stable_ids);  // stable ids hold no 0
    progress->set_text(absl::StrJoin(words, " "));
    auto sentences = split_sentences(words);
    // Only sentences that are complete (end with ".") are final.
    const size_t complete =
        sentences.empty() || words.back() == "." ? sentences.size() : sentences.size() - 1;
    for (; sentences_sent < complete; ++sentences_sent) progress->add_sentences(sentences[sentences_sent]);
    progress->set_step(static_cast<int32_t>(p.step));
    return writer->Write(message);
  };
  v1::StreamReportResponse last;
  absl::Status status = generate(*served, context, *request, last.mutable_final(), on_progress);
  if (status.ok() && !writer->Write(last)) status = absl::CancelledError("the client stopped reading the stream");
  return finish("StreamReport", context, request->request_id(), start, status, status.ok() ? &last.final() : nullptr);
}

absl::StatusOr<preprocessing::AssembledStudy> ReportServiceImpl::preprocess(const ServedModel& served,
                                                                         grpc::ServerContext* context,
                                                                         const v1::GenerateReportRequest& request,
                                                                         Clock::time_point deadline,
                                                                         int64_t max_decode_bytes) {
  {
    std::unique_lock<std::mutex> lock(preprocess_mutex_);
    while (preprocess_running_ >= options_.engine.preprocess_threads) {
      preprocess_free_.wait_for(lock, std::chrono::milliseconds(10));
      if (Clock::now() >= deadline) return absl::DeadlineExceededError("deadline exceeded before decoding the DICOM");
      if (context->IsCancelled()) return absl::CancelledError("cancelled by the client");
    }
    ++preprocess_running_;
  }
  auto study = assemble_request_study(request, served.study_options, max_decode_bytes, options_.limits);
  {
    std::lock_guard<std::mutex> lock(preprocess_mutex_);
    --preprocess_running_;
  }
  preprocess_free_.notify_one();
  return study;
}

absl::Status ReportServiceImpl::generate(const ServedModel& served, grpc::ServerContext* context,
                                         const v1::GenerateReportRequest& request,
                                         v1::GenerateReportResponse* response,
                                         const std::function<bool(const JobProgress&)>& on_progress) {
  const auto start = Clock::now();
  if (auth_ != nullptr) CMN_RETURN_IF_ERROR(auth_->check(context->client_metadata()));

  // 1. What the request asks for, against the server's limits (request_intake.h).
  const ServingModel& model = served.serving;
  CMN_ASSIGN_OR_RETURN(RequestPlan plan, plan_request(request, model.info, served.study_options, options_.limits));
  const model::DecodingOptions& decoding = plan.decoding;
  std::vector<std::string>& warnings = plan.warnings;
  const bool scoring = !request.score_report().empty();
  if (scoring && request.output().attention_maps()) {
    return absl::InvalidArgumentError("score_report scores a given report; output.attention_maps draws a generated "
                                      "one's: ask for one or the other");
  }
  const Clock::time_point deadline = steady_deadline(*context);
  if (Clock::now() >= deadline) return absl::DeadlineExceededError("deadline exceeded before the call started");

  // 2. A place in the engine, or RESOURCE_EXHAUSTED at once (STAT calls have slots of their own).
  const Priority priority = request.priority() == v1::PRIORITY_STAT ? Priority::kStat : Priority::kRoutine;
  CMN_ASSIGN_OR_RETURN(Engine::Slot slot, engine_->admit(priority));

  // 3. DICOM -> the model's view slots.
  const auto preprocess_start = Clock::now();
  CMN_ASSIGN_OR_RETURN(preprocessing::AssembledStudy study,
                       preprocess(served, context, request, deadline, plan.decode_budget));
  const double preprocess_ms = ms(Clock::now() - preprocess_start);
  if (metrics_ != nullptr) metrics_->observe_stage("preprocess", preprocess_ms / 1000.0);
  const int64_t views = static_cast<int64_t>(study.images.size());

  // 4. The engine batches, encodes and decodes it.
  JobControl control;
  control.deadline = deadline;
  control.cancelled = [context] { return context->IsCancelled(); };
  control.on_progress = on_progress;
  control.attention = request.output().attention_maps();
  control.priority = priority;
  control.replica = served.replica;
  if (scoring) {
    const auto encoded = model.model->tokenizer().encode(request.score_report());  // 0, ids..., 0
    control.score_ids = std::vector<int64_t>(encoded.begin() + 1, encoded.end() - 1);
  }
  CMN_ASSIGN_OR_RETURN(JobResult result, engine_->run(slot, study.images, decoding, control));
  response->set_scored(scoring);

  // 5. The response.
  fill_text(result.hypothesis, model.model->tokenizer(), request.output().token_scores(), response);
  fill_study(study, request, response);
  if (request.output().attention_maps()) {
    const std::vector<int64_t> ids(response->token_ids().begin(), response->token_ids().end());
    CMN_ASSIGN_OR_RETURN(const std::vector<pipeline::AttentionMap> maps,
                         pipeline::sentence_attention_maps(ids, result.hypothesis.attention, model.model->tokenizer(),
                                                           views));
    for (const auto& map : maps) {
      CMN_ASSIGN_OR_RETURN(std::string png, pipeline::render_attention_png(map, study.images[static_cast<size_t>(map.view)],
                                                                           served.study_options.image));
      auto* out = response->add_attention_maps();
      out->set_sentence(static_cast<int32_t>(map.sentence));
      out->set_text(map.text);
      out->set_layer(static_cast<int32_t>(map.layer));
      out->set_view(static_cast<int32_t>(map.view));
      out->set_png(std::move(png));
    }
  }
  *response->mutable_model() = served.info;
  response->mutable_model()->clear_limits();
  auto* t = response->mutable_timings();
  t->set_queue_ms(result.queue_s * 1000.0);
  t->set_preprocess_ms(preprocess_ms);
  t->set_visual_ms(result.visual_s * 1000.0);
  t->set_encode_ms(result.encode_s * 1000.0);
  t->set_decode_ms(result.decode_s * 1000.0);
  t->set_batch_size(result.batch_size);
  t->set_decode_steps(static_cast<int32_t>(result.decode_steps));
  t->set_total_ms(ms(Clock::now() - start));
  fill_settings(decoding, response->mutable_decoding());
  if (model.info.untrained) {
    warnings.push_back("UNTRAINED model (random weights): this text is not a report");
  }
  const double warn_below = options_.study.consistency_warn_below;
  if (pipeline::consistency_is_low(result.hypothesis.consistency, warn_below)) {
    warnings.push_back(pipeline::kLowConsistencyWarning);
  }
  for (auto& w : warnings) response->add_warnings(std::move(w));
  response->set_request_id(request.request_id());
  if (request.output().dicom_sr() || request.output().findings_sr()) {
    CMN_RETURN_IF_ERROR(fill_dicom_sr(served, study, request, response));
  }
  if (request.output().fhir()) {
    // The FHIR DiagnosticReport (pipeline/fhir_report.h): the model's identity is the bundle's, as in the SR.
    pipeline::FhirReportInput fhir;
    fhir.study_instance_uid = response->study_instance_uid();
    fhir.text = response->report();
    fhir.model = {model.info.name, model.info.version, model.info.digest, options_.sr.manufacturer,
                  model.info.untrained};
    fhir.consistency = result.hypothesis.consistency;
    fhir.consistency_warn_below = warn_below;
    CMN_ASSIGN_OR_RETURN(std::string json, pipeline::write_fhir_report(fhir));
    response->set_fhir(std::move(json));
  }
  return absl::OkStatus();
}

absl::Status ReportServiceImpl::fill_dicom_sr(const ServedModel& served, const preprocessing::AssembledStudy& study,
                                              const v1::GenerateReportRequest& request,
                                              v1::GenerateReportResponse* response) const {
  // The evidence is what filled the view slots (a repeated slot is one instance); the sources are the request's
  // bytes of those instances (AssembledStudy::slot_inputs: their positions in the request).
  std::vector<std::string> sources;
  for (size_t input : study.slot_inputs) {
    if (input >= static_cast<size_t>(request.instances_size())) {
      return absl::InternalError(absl::StrCat("DICOM SR: view slot input ", input, " is not a request instance"));
    }
    sources.push_back(request.instances(static_cast<int>(input)).data());
  }
  pipeline::SrOptions sr = options_.sr;
  const auto& info = served.serving.info;
  sr.model_name = info.name;
  sr.model_version = info.version;
  sr.model_digest = info.digest;  // a retrained model is a new Device UID
  sr.untrained = info.untrained;
  if (response->has_consistency()) sr.consistency = response->consistency();
  sr.consistency_warn_below = options_.study.consistency_warn_below;
  const v1::DecodingSettings& d = response->decoding();
  sr.algorithm_parameters = {absl::StrCat("method=", v1::DecodingMethod_Name(d.method())),
                             absl::StrCat("beam_size=", d.beam_size()), absl::StrCat("max_length=", d.max_length()),
                             absl::StrCat("temperature=", d.temperature()), absl::StrCat("seed=", d.seed())};
  if (request.output().dicom_sr()) {
    const std::vector<std::string> sentences(response->sentences().begin(), response->sentences().end());
    CMN_ASSIGN_OR_RETURN(std::string bytes, pipeline::write_report_sr(sources, sentences, sr));
    response->set_dicom_sr(std::move(bytes));
  }
  if (request.output().findings_sr()) {
    CMN_ASSIGN_OR_RETURN(std::string bytes, pipeline::write_findings_sr(
                                                sources, cmn::metrics::stated_observations(response->report()), sr));
    response->set_findings_sr(std::move(bytes));
  }
  return absl::OkStatus();
}

grpc::Status ReportServiceImpl::finish(const char* method, grpc::ServerContext* context, const std::string& request_id,
                                       Clock::time_point start, const absl::Status& status,
                                       const v1::GenerateReportResponse* response) {
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::string code = status_code_name(status.code());
  if (metrics_ != nullptr) metrics_->count_request(method, code, seconds);
  if (options_.logging.requests) {
    // One line per call. Never patient attributes: the messages come from code that does not read them, and
    // instances are named by position.
    std::string line = absl::StrCat("rpc=", method, " code=", code, " ms=", static_cast<int64_t>(seconds * 1000),
                                    " peer=", context->peer());
    const std::string id = safe_request_id(request_id);
    if (!id.empty()) absl::StrAppend(&line, " request_id=", id);
    if (response != nullptr && status.ok() && !response->study_instance_uid().empty()) {
      absl::StrAppend(&line, " study=", response->study_instance_uid(), " slots=", response->slots_size(),
                      " skipped=", response->skipped_size(), " batch=", response->timings().batch_size(),
                      " steps=", response->timings().decode_steps(), " tokens=", response->token_ids_size());
    }
    if (!status.ok()) absl::StrAppend(&line, " error=\"", status.message(), "\"");
    switch (status.code()) {
      case absl::StatusCode::kInternal:
      case absl::StatusCode::kUnknown:
      case absl::StatusCode::kDataLoss:
        LOG(ERROR) << line;
        break;
      default:  // client errors, deadlines and cancellations are expected: counted, not errors
        LOG(INFO) << line;
    }
  }
  return to_grpc_status(status);
}

}  // namespace cmn::server
