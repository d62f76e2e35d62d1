// The run: a reader thread decodes studies ahead of the model into a bounded queue, the model takes them a batch
// at a time (cmn_pipeline's ReportGenerator), and each study's line goes out as soon as its batch is done, with
// progress on stderr (counts and rates only: no study key in logs).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "batch_internal.h"
#include "cmn/batch/batch.h"
#include "cmn/pipeline/attention.h"
#include "cmn/pipeline/consistency.h"

namespace cmn::batch {
namespace {

namespace fs = std::filesystem;
using detail::Clock;
using detail::seconds_since;
using pipeline::ModelIdentity;

std::string status_code_name(absl::StatusCode code) { return absl::StatusCodeToString(code); }

nlohmann::json model_json(const ModelIdentity& id) {
  return {{"name", id.name}, {"version", id.version}, {"digest", id.digest}, {"untrained", id.untrained}};
}

// One study read and decoded ahead of the model.
struct Prepared {
  absl::Status status;                               // not OK: the study fails with this
  std::vector<preprocessing::FloatImage> images;     // `views` model inputs in slot order
  nlohmann::json line;                               // id, study, instances, skipped, ...
  double read_s = 0.0;
};

Prepared prepare(const BatchStudy& study, const BatchOptions& options, const ModelIdentity& id) {
  namespace pre = preprocessing;
  Prepared p;
  const auto start = Clock::now();
  p.line["id"] = study.key;
  p.line["model"] = model_json(id);
  if (id.untrained) p.line["warning"] = "untrained model: random weights, not a report";
  if (study.source == BatchStudy::Source::kImages) {
    p.line["images"] = study.files;
    if (static_cast<int64_t>(study.files.size()) != options.study.views) {
      p.status = absl::InvalidArgumentError(
          absl::StrCat("study has ", study.files.size(), " images but the model takes ", options.study.views));
    }
    for (size_t v = 0; p.status.ok() && v < study.files.size(); ++v) {
      auto image = pre::load_model_input(study.files[v], options.generator.image);
      if (!image.ok()) {
        p.status = image.status();
        break;
      }
      p.images.push_back(std::move(*image));
    }
  } else {
    if (study.key_is_study_uid) p.line["study"] = study.key;  // also when the study fails
    std::vector<pre::InstanceInput> inputs;
    for (const auto& f : study.files) {
      auto bytes = detail::read_bytes(f);
      if (!bytes.ok()) {
        p.status = bytes.status();
        break;
      }
      inputs.push_back({f, std::move(*bytes)});
    }
    if (p.status.ok()) {
      auto assembled = pre::assemble_study(inputs, options.study);
      if (!assembled.ok()) {
        p.status = assembled.status();
      } else {
        p.line["study"] = assembled->study_instance_uid;
        nlohmann::json slots = nlohmann::json::array();
        for (const auto& s : assembled->slots) {
          slots.push_back({{"slot", s.slot},
                           {"sop_instance_uid", s.instance.sop_instance_uid},
                           {"series_instance_uid", s.instance.series_instance_uid},
                           {"view", pre::view_name(s.instance.view)},
                           {"source", s.instance.source},
                           {"reason", s.reason}});
        }
        nlohmann::json skipped = nlohmann::json::array();
        for (const auto& s : assembled->skipped) {
          skipped.push_back({{"sop_instance_uid", s.instance.sop_instance_uid},
                             {"source", s.instance.source},
                             {"reason", s.reason}});
        }
        p.line["instances"] = std::move(slots);
        p.line["skipped"] = std::move(skipped);
        p.images = std::move(assembled->images);
      }
    }
  }
  p.read_s = seconds_since(start);
  return p;
}

// Bounded queue between the reader thread and the model loop.
class PreparedQueue {
 public:
  explicit PreparedQueue(size_t capacity) : capacity_(capacity) {}
  void push(Prepared p) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_ || stop_; });
    if (stop_) return;
    items_.push_back(std::move(p));
    not_empty_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void stop() {  // the consumer gives up: unblock the producer
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    not_full_.notify_all();
  }
  // Up to `n` items; fewer only at the end. Empty = done.
  std::vector<Prepared> pop(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return items_.size() >= n || closed_; });
    std::vector<Prepared> out;
    while (!items_.empty() && out.size() < n) {
      out.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    not_full_.notify_all();
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Prepared> items_;
  size_t capacity_;
  bool closed_ = false, stop_ = false;
};

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  if (total >= 3600) return absl::StrCat(total / 3600, "h", (total % 3600) / 60, "m");
  if (total >= 60) return absl::StrCat(total / 60, "m", total % 60, "s");
  return absl::StrCat(total, "s");
}

// Progress on stderr: counts and rates only (never a study key: logs carry no identifiers).
class Progress {
 public:
  Progress(const std::string& mode, int64_t total) : total_(total), start_(Clock::now()) {
    enabled_ = mode == "always" || (mode == "auto" && isatty(STDERR_FILENO) == 1);
    tty_ = isatty(STDERR_FILENO) == 1;
  }
  void update(int64_t processed, int64_t failed, bool final = false) {
    if (!enabled_ || total_ == 0) return;
    const double elapsed = seconds_since(start_);
    if (!final && !tty_ && elapsed - last_print_ < 10.0) return;  // a log file gets a line every 10 s
    if (final && !tty_ && processed == last_count_) return;         // already said
    last_print_ = elapsed;
    last_count_ = processed;
    const double rate = elapsed > 0 ? static_cast<double>(processed) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - processed) / rate : NAN;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * processed / total_);
    char rate_text[32];
    std::snprintf(rate_text, sizeof rate_text, "%.2f", rate);
    std::cerr << (tty_ ? "\r" : "") << "cmn-generate: [" << std::string(static_cast<size_t>(filled), '#')
              << std::string(static_cast<size_t>(kWidth - filled), ' ') << "] " << processed << "/" << total_
              << " studies, " << failed << " failed, " << rate_text << " studies/s, ETA " << format_duration(eta)
              << (tty_ && !final ? "" : "\n") << std::flush;
  }

 private:
  bool enabled_ = false, tty_ = false;
  int64_t total_;
  Clock::time_point start_;
  double last_print_ = -1e9;
  int64_t last_count_ = -1;
};

// --score-reports: the given reports of the decoded studies, scored in one pass; each line gets the report, its
// token and summed log-probs and (with an alignment head) its consistency, marked "scored".
void score_given_reports(ReportGenerator& generator, const BatchOptions& options, const std::vector<BatchStudy>& studies,
                         size_t first, const std::vector<size_t>& decoded,
                         const std::vector<std::vector<preprocessing::FloatImage>>& images, std::vector<Prepared>& prepared,
                         std::vector<absl::Status>& status) {
  std::vector<std::vector<preprocessing::FloatImage>> given_images;
  std::vector<std::string> given;
  std::vector<size_t> rows;  // index into `prepared`
  for (size_t k = 0; k < decoded.size(); ++k) {
    const auto it = options.score_reports->find(studies[first + decoded[k]].key);
    if (it == options.score_reports->end()) {
      status[decoded[k]] = absl::NotFoundError("no report for this study in --score-reports");
      continue;
    }
    given_images.push_back(images[k]);
    given.push_back(it->second);
    rows.push_back(decoded[k]);
  }
  const auto scored = generator.score_images(given_images, given, options.generator);
  for (size_t k = 0; k < rows.size(); ++k) {
    if (!scored[k].ok()) {
      status[rows[k]] = scored[k].status();
      continue;
    }
    auto& line = prepared[rows[k]].line;
    line["scored"] = true;
    line["report"] = given[k];
    line["log_prob"] = scored[k]->log_prob;
    line["token_log_probs"] = scored[k]->token_log_probs;
    if (scored[k]->consistency) line["consistency"] = *scored[k]->consistency;
    if (pipeline::consistency_is_low(scored[k]->consistency, options.consistency_warn_below)) {
      line["consistency_warning"] = pipeline::kLowConsistencyWarning;
    }
  }
}

}  // namespace

absl::StatusOr<BatchSummary> run_batch(ReportGenerator& generator, const std::vector<BatchStudy>& studies,
                                       const BatchOptions& options,
                                       const std::function<absl::Status(const std::string& line)>& emit) {
  BatchSummary summary;
  summary.total = static_cast<int64_t>(studies.size());
  const auto start = Clock::now();
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.generator.batch_size));
  GeneratorOptions gen = options.generator;
  gen.attention = !options.attention_dir.empty();
  gen.batch_size = static_cast<int64_t>(batch);
  const ModelIdentity& id = generator.identity();
  Progress progress(options.progress, summary.total);

  // The reader: decodes studies in order, ahead of the model, into a queue of two batches.
  PreparedQueue queue(2 * batch);
  std::thread reader;
  size_t next_inline = 0;
  if (options.read_ahead) {
    reader = std::thread([&] {
      for (const auto& s : studies) queue.push(prepare(s, options, id));
      queue.close();
    });
  }
  auto next_batch = [&]() -> std::vector<Prepared> {
    if (options.read_ahead) return queue.pop(batch);
    std::vector<Prepared> out;
    for (; next_inline < studies.size() && out.size() < batch; ++next_inline) {
      out.push_back(prepare(studies[next_inline], options, id));
    }
    return out;
  };
  auto finish_reader = [&] {
    if (reader.joinable()) {
      queue.stop();
      reader.join();
    }
  };

  size_t index = 0;  // of the first study of the current batch
  absl::Status emit_status;
  while (emit_status.ok()) {
    std::vector<Prepared> prepared = next_batch();
    if (prepared.empty()) break;
    std::vector<std::vector<preprocessing::FloatImage>> images;
    std::vector<size_t> decoded;  // index into `prepared` of each entry of `images`
    for (size_t i = 0; i < prepared.size(); ++i) {
      if (!prepared[i].status.ok()) continue;
      decoded.push_back(i);
      images.push_back(std::move(prepared[i].images));
    }
    std::vector<absl::Status> status(prepared.size());
    for (size_t i = 0; i < prepared.size(); ++i) status[i] = prepared[i].status;
    if (options.score_reports != nullptr) {
      score_given_reports(generator, options, studies, index, decoded, images, prepared, status);
      images.clear();
      decoded.clear();  // nothing left to generate
    }
    auto results = generator.generate_images(images, gen);
    for (size_t k = 0; k < decoded.size(); ++k) {
      auto& p = prepared[decoded[k]];
      const auto& r = results[k];
      if (!r.ok()) {
        status[decoded[k]] = r.status();
        continue;
      }
      p.line["report"] = r->report;
      p.line["token_ids"] = r->token_ids;
      p.line["log_prob"] = r->log_prob;
      if (r->consistency) p.line["consistency"] = *r->consistency;  // absent without an alignment head
      if (pipeline::consistency_is_low(r->consistency, options.consistency_warn_below)) {
        p.line["consistency_warning"] = pipeline::kLowConsistencyWarning;
      }
      if (gen.similar > 0) {
        auto similar = nlohmann::json::array();
        for (const auto& f : r->similar) similar.push_back({{"report", f.report}, {"similarity", f.similarity}});
        p.line["similar"] = std::move(similar);
      }
      p.line["timings"] = {{"read_s", p.read_s}, {"preprocess_s", r->times.preprocess_s},
                           {"visual_s", r->times.visual_s}, {"encode_s", r->times.encode_s},
                           {"decode_s", r->times.decode_s}};
      if (gen.attention) {
        const std::string dir = (fs::path(options.attention_dir) / safe_file_name(studies[index + decoded[k]].key)).string();
        auto maps = pipeline::sentence_attention_maps(r->token_ids, r->token_attention, generator.tokenizer(), options.study.views);
        absl::Status written = maps.ok() ? pipeline::write_attention_maps(dir, *maps, images[k], gen.image) : maps.status();
        if (written.ok()) {
          p.line["attention_dir"] = dir;
        } else {
          p.line["attention_error"] = std::string(written.message());
        }
      }
    }
    for (size_t i = 0; i < prepared.size(); ++i) {
      auto& p = prepared[i];
      if (!status[i].ok()) {
        p.line["error"] = std::string(status[i].message());
        p.line["error_code"] = status_code_name(status[i].code());
        ++summary.failed;
        ++summary.failed_by_reason[status_code_name(status[i].code())];
      } else {
        ++summary.done;
      }
      emit_status = emit(p.line.dump());
      if (!emit_status.ok()) break;
    }
    index += prepared.size();
    progress.update(summary.done + summary.failed, summary.failed);
  }
  finish_reader();
  progress.update(summary.done + summary.failed, summary.failed, /*final=*/true);
  if (!emit_status.ok()) return emit_status;
  summary.elapsed_s = seconds_since(start);
  summary.studies_per_s =
      summary.elapsed_s > 0 ? static_cast<double>(summary.done + summary.failed) / summary.elapsed_s : 0.0;
  return summary;
}

}  // namespace cmn::batch
