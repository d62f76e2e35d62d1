// cmn-train-bench: one training step of R2GenCMN's encoder-decoder with the memory query done two ways, each in
// its own process, on the same seeded batch with every dropout off:
//   gather    - ours (MultiThreadMemoryImpl::QueryPath::kGather): index_select of the top-k values;
//   reference - R2GenCMN's memory_querying_responding (kReferenceExpand): values expanded to [B,h,T,M,dk] and
//               torch.gather'ed, whose backward allocates that tensor densely (M = 2048 slots, dk = 64).
// A step = forward (att_feats -> log-probs), R2GenCMN's loss, backward, Adam(amsgrad) update. The trunk is not
// in it: the step is the one trainer.cache_visual_features runs (frozen ResNet-101, cached patch features
// [B, views*49, 2048]); the trunk's share would be the same on both paths.
// Prints per path: step time (median over --steps after the first, and the first; wall and CPU), peak RSS (the child's
// ru_maxrss from wait4, and its RSS before the first step), the loss of each step; then the ratios, and one JSON
// line last.
//   cmn-train-bench [--batch 8] [--views 4] [--tokens 60] [--steps 3] [--threads 1] [--vocab 760]
//                   [--path both|gather|reference]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cmn/model/encoder_decoder.h"
#include "cmn/model/loss.h"

namespace {

using QueryPath = cmn::model::MultiThreadMemoryImpl::QueryPath;

struct Args {
  int64_t batch = 8, views = 4, tokens = 60, steps = 3, threads = 1, vocab = 760;
  std::string path = "both";
  bool child = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "cmn-train-bench: " << message << "\n"
            << "usage: cmn-train-bench [--batch 8] [--views 4] [--tokens 60] [--steps 3] [--threads 1] "
               "[--vocab 760] [--path both|gather|reference]\n";
  std::exit(2);
}

int64_t to_positive(const std::string& flag, const char* value) {
  char* end = nullptr;
  const long long v = std::strtoll(value, &end, 10);
  if (end == value || *end != '\0' || v <= 0) usage_error(flag + " needs a positive integer, got '" + value + "'");
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--batch") a.batch = to_positive(flag, value());
    else if (flag == "--views") a.views = to_positive(flag, value());
    else if (flag == "--tokens") a.tokens = to_positive(flag, value());
    else if (flag == "--steps") a.steps = to_positive(flag, value());
    else if (flag == "--threads") a.threads = to_positive(flag, value());
    else if (flag == "--vocab") a.vocab = to_positive(flag, value());
    else if (flag == "--path") a.path = value();
    else if (flag == "--child") a.child = true;
    else usage_error(flag == "--help" || flag == "-h" ? "help" : "unknown option '" + flag + "'");
  }
  if (a.path != "both" && a.path != "gather" && a.path != "reference") {
    usage_error("--path must be both, gather or reference, got '" + a.path + "'");
  }
  if (a.child && a.path == "both") usage_error("--child needs --path gather or reference");
  return a;
}

int64_t rss_kib_now() {  // VmRSS of /proc/self/status
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) kib = std::strtoll(line + 6, nullptr, 10);
  }
  std::fclose(f);
  return kib;
}

// user + system CPU seconds of this process (all threads): the wall time of a shared machine varies with its load.
double cpu_seconds_now() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// The measured process: builds the published architecture (iu_xray args), one seeded batch, `steps` steps.
int run_child(const Args& a) {
  torch::set_num_threads(static_cast<int>(a.threads));
  cmn::model::ModelConfig config;  // d_model 512, 8 heads, 3 layers, cmm_size 2048, topk 32, d_vf 2048
  config.vocab_size = a.vocab;
  torch::manual_seed(7580);
  cmn::model::BaseCMN model(config);
  model->train();
  for (auto& m : model->modules()) {  // dropout off: both paths must see the same function
    if (auto* d = m->as<torch::nn::DropoutImpl>()) d->options.p(0.0);
  }
  model->cmn->set_query_path(a.path == "reference" ? QueryPath::kReferenceExpand : QueryPath::kGather);

  // The batch: ReLU'd patch features as ResNet-101's layer4 gives, and reports of 40%..100% of --tokens.
  const int64_t patches = a.views * 49, length = a.tokens + 1;  // ids: bos, tokens, padding
  auto att_feats = torch::relu(torch::randn({a.batch, patches, config.d_vf}));  // [B,S,2048]
  auto targets = torch::zeros({a.batch, length}, torch::kLong);                  // [B,L]
  auto masks = torch::zeros({a.batch, length});                                  // [B,L]
  for (int64_t b = 0; b < a.batch; ++b) {
    const int64_t words = std::max<int64_t>(1, (a.tokens - 1) * (4 + (b * 7) % 7) / 10);  // w1..wn, then 0
    targets[b].narrow(0, 1, words).copy_(torch::randint(1, a.vocab + 1, {words}, torch::kLong));
    masks[b].narrow(0, 0, words + 2).fill_(1.0);  // bos .. the final 0
  }
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(5e-4).betas({0.9, 0.98}).eps(1e-9).amsgrad(true));

  const int64_t rss_before = rss_kib_now();
  std::vector<double> seconds, cpu_seconds, losses;
  for (int64_t s = 0; s < a.steps; ++s) {
    const double cpu0 = cpu_seconds_now();
    const auto t0 = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    auto loss = cmn::model::language_model_loss(model->forward(att_feats, targets), targets, masks);
    loss.backward();
    optimizer.step();
    losses.push_back(loss.item<double>());
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu_seconds.push_back(cpu_seconds_now() - cpu0);
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::ostringstream out;
  out.precision(17);
  out << "{\"path\":\"" << a.path << "\",\"rss_before_kib\":" << rss_before << ",\"self_maxrss_kib\":" << ru.ru_maxrss
      << ",\"seconds\":[";
  for (size_t i = 0; i < seconds.size(); ++i) out << (i ? "," : "") << seconds[i];
  out << "],\"cpu_seconds\":[";
  for (size_t i = 0; i < cpu_seconds.size(); ++i) out << (i ? "," : "") << cpu_seconds[i];
  out << "],\"losses\":[";
  for (size_t i = 0; i < losses.size(); ++i) out << (i ? "," : "") << losses[i];
  out << "]}";
  std::cout << out.str() << std::endl;
  return 0;
}

struct ChildResult {
  std::string path, json;
  int64_t maxrss_kib = 0, rss_before_kib = 0;
  std::vector<double> seconds, cpu_seconds, losses;
  bool ok = false;
};

std::vector<double> json_array(const std::string& json, const std::string& key) {
  std::vector<double> v;
  const auto at = json.find("\"" + key + "\":[");
  if (at == std::string::npos) return v;
  std::istringstream in(json.substr(at + key.size() + 4, json.find(']', at) - at - key.size() - 4));
  std::string item;
  while (std::getline(in, item, ',')) v.push_back(std::stod(item));
  return v;
}

int64_t json_int(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::strtoll(json.c_str() + at + key.size() + 3, nullptr, 10);
}

// Runs this program again as `--child --path PATH`; its peak RSS is ru_maxrss from wait4, its own process only.
ChildResult spawn(const Args& a, const std::string& path) {
  ChildResult r;
  r.path = path;
  int fds[2];
  if (pipe(fds) != 0) return r;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<std::string> argv_s = {"cmn-train-bench", "--child", "--path", path,
                                       "--batch", std::to_string(a.batch), "--views", std::to_string(a.views),
                                       "--tokens", std::to_string(a.tokens), "--steps", std::to_string(a.steps),
                                       "--threads", std::to_string(a.threads), "--vocab", std::to_string(a.vocab)};
    std::vector<char*> argv;
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) r.json.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  struct rusage ru {};
  if (wait4(pid, &status, 0, &ru) < 0) return r;
  r.maxrss_kib = ru.ru_maxrss;
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && r.json.find("\"losses\"") != std::string::npos;
  if (!r.ok) {
    std::cerr << "cmn-train-bench: the " << path << " child failed ("
              << (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                      : "exit " + std::to_string(WEXITSTATUS(status)))
              << "; a SIGKILL is usually the OOM killer)\n";
    return r;
  }
  r.seconds = json_array(r.json, "seconds");
  r.cpu_seconds = json_array(r.json, "cpu_seconds");
  r.losses = json_array(r.json, "losses");
  r.rss_before_kib = json_int(r.json, "rss_before_kib");
  return r;
}

double median_after_first(std::vector<double> v) {
  if (v.size() > 1) v.erase(v.begin());
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.child) return run_child(a);

  std::vector<std::string> paths;
  if (a.path == "both" || a.path == "gather") paths.push_back("gather");
  if (a.path == "both" || a.path == "reference") paths.push_back("reference");
  std::printf("cmn-train-bench: batch %ld, %ld views (%ld patches), %ld tokens, %ld steps, %ld threads\n",
              static_cast<long>(a.batch), static_cast<long>(a.views), static_cast<long>(a.views * 49),
              static_cast<long>(a.tokens), static_cast<long>(a.steps), static_cast<long>(a.threads));
  std::vector<ChildResult> results;
  for (const auto& p : paths) {
    results.push_back(spawn(a, p));
    const auto& r = results.back();
    if (!r.ok) continue;
    std::printf("  %-9s step %.3f s wall, %.3f s CPU (first %.3f s)  peak RSS %.1f MiB (%.1f MiB before the first "
                "step)  loss",
                p.c_str(), median_after_first(r.seconds), median_after_first(r.cpu_seconds), r.seconds.front(),
                r.maxrss_kib / 1024.0, r.rss_before_kib / 1024.0);
    for (double l : r.losses) std::printf(" %.9f", l);
    std::printf("\n");
    std::fflush(stdout);
  }
  bool all_ok = true;
  for (const auto& r : results) all_ok = all_ok && r.ok;
  std::ostringstream json;
  json.precision(9);
  json << "{\"batch\":" << a.batch << ",\"views\":" << a.views << ",\"tokens\":" << a.tokens
       << ",\"threads\":" << a.threads;
  for (const auto& r : results) {
    if (!r.ok) {
      json << ",\"" << r.path << "\":null";
      continue;
    }
    json << ",\"" << r.path << "\":{\"step_s\":" << median_after_first(r.seconds)
         << ",\"step_cpu_s\":" << median_after_first(r.cpu_seconds) << ",\"peak_rss_mib\":"
         << r.maxrss_kib / 1024.0 << ",\"first_loss\":" << r.losses.front() << "}";
  }
  if (results.size() == 2 && all_ok) {
    const auto& g = results[0];
    const auto& ref = results[1];
    const double speedup = median_after_first(ref.seconds) / median_after_first(g.seconds);
    const double cpu_speedup = median_after_first(ref.cpu_seconds) / median_after_first(g.cpu_seconds);
    const double memory = static_cast<double>(ref.maxrss_kib) / static_cast<double>(g.maxrss_kib);
    double max_loss_diff = 0.0;
    for (size_t i = 0; i < std::min(g.losses.size(), ref.losses.size()); ++i) {
      max_loss_diff = std::max(max_loss_diff, std::abs(g.losses[i] - ref.losses[i]));
    }
    std::printf("  reference / gather: step time x%.2f wall, x%.2f CPU; peak RSS x%.2f; |loss difference| first "
                "step %.3g, any step %.3g\n",
                speedup, cpu_speedup, memory, std::abs(g.losses.front() - ref.losses.front()), max_loss_diff);
    json << ",\"time_ratio\":" << speedup << ",\"cpu_time_ratio\":" << cpu_speedup << ",\"rss_ratio\":" << memory
         << ",\"first_loss_abs_diff\":" << std::abs(g.losses.front() - ref.losses.front()) << "}";
  } else {
    json << "}";
  }
  std::printf("%s\n", json.str().c_str());
  return all_ok ? 0 : 1;
}
