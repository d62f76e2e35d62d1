#include "in_process.h"

#include <sstream>

#include "absl/strings/str_cat.h"
#include "cmn/model/runtime.h"
#include "cmn/pipeline/bundle.h"
#include "cmn/pipeline/model_loader.h"
#include "cmn/pipeline/fhir_report.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/dicom.h"

namespace cmn::pacs {

namespace {

// The report's sentences exactly as cmn-server's response.sentences: its words (the decoded text is the words
// joined by single spaces) through the same model::split_sentences.
std::vector<std::string> sentences_of(const std::string& report) {
  std::vector<std::string> words;
  std::istringstream in(report);
  for (std::string w; in >> w;) words.push_back(w);
  return model::split_sentences(words);
}

class Reporter : public InProcessReporter {
 public:
  Reporter(pipeline::BundleInfo info, std::unique_ptr<engine::Replica> replica, const pipeline::SrOptions& sr)
      : info_(std::move(info)), generator_(std::move(replica)), sr_(sr) {
    key_ = info_.version.empty() ? info_.name : absl::StrCat(info_.name, " ", info_.version);
    sr_.model_name = info_.name;
    sr_.model_version = info_.version;
    sr_.model_digest = info_.digest;  // a retrained model is a new Device UID
    sr_.untrained = info_.untrained;
    study_.views = info_.config.effective_views();
    study_.allowed_modalities = info_.allowed_modalities;
    study_.image = info_.image;
    options_.decoding = model::decoding_options_from(info_.config);
    options_.image = info_.image;
    options_.batch_size = 1;
  }
  const std::string& model_key() const override { return key_; }

  absl::StatusOr<InProcessReport> report(const std::vector<std::string>& instances) override {
    std::vector<preprocessing::InstanceInput> inputs;
    for (size_t i = 0; i < instances.size(); ++i) inputs.push_back({absl::StrCat("instance[", i, "]"), instances[i]});
    auto study = preprocessing::assemble_study(inputs, study_);
    if (!study.ok()) return study.status();
    auto results = generator_.generate_images({study->images}, options_);
    if (results.size() != 1) return absl::InternalError("the generator returned no result");
    if (!results[0].ok()) return results[0].status();
    std::vector<std::string> sources;
    for (size_t input : study->slot_inputs) {
      if (input >= instances.size()) return absl::InternalError("a view slot names no instance");
      sources.push_back(instances[input]);
    }
    InProcessReport out;
    out.report = results[0]->report;
    out.slots = static_cast<int>(study->slots.size());
    pipeline::SrOptions sr_options = sr_;
    sr_options.consistency = results[0]->consistency;  // absent without an alignment head
    auto sr = pipeline::write_report_sr(sources, sentences_of(out.report), sr_options);
    if (!sr.ok()) return sr.status();
    out.dicom_sr = std::move(*sr);
    pipeline::FhirReportInput fhir;
    fhir.study_instance_uid = study->study_instance_uid;
    fhir.text = out.report;
    fhir.model = {info_.name, info_.version, info_.digest, sr_.manufacturer, info_.untrained};
    fhir.consistency = results[0]->consistency;
    fhir.consistency_warn_below = sr_.consistency_warn_below;
    auto json = pipeline::write_fhir_report(fhir);
    if (!json.ok()) return json.status();
    out.fhir = std::move(*json);
    return out;
  }

 private:
  pipeline::BundleInfo info_;
  pipeline::ReportGenerator generator_;
  pipeline::SrOptions sr_;
  std::string key_;
  preprocessing::StudyOptions study_;
  pipeline::GeneratorOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<InProcessReporter>> InProcessReporter::load(const std::string& bundle_dir, int threads,
                                                                           const pipeline::SrOptions& sr) {
  if (threads > 0) model::set_threads(threads);
  pipeline::ModelSource source;
  source.bundle = bundle_dir;
  source.bundle_key = "--bundle";
  auto loaded = pipeline::load_model(source);
  if (!loaded.ok()) return loaded.status();
  auto replica = engine::Replica::create(loaded->model, "cpu");
  if (!replica.ok()) return replica.status();
  return std::unique_ptr<InProcessReporter>(new Reporter(std::move(loaded->info), std::move(*replica), sr));
}

}  // namespace cmn::pacs
