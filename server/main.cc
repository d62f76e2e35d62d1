// cmn-server: the gRPC ReportService.
//   cmn-server --config configs/server.yaml [dotted.key=value ...]
//   cmn-server --config configs/server.yaml model.bundle=bundles/iu_xray server.port=0 --check
// Exit codes: 0 stopped by SIGTERM/SIGINT after draining (or --check passed); 1 bad config, bad model or
// cannot listen; 2 bad command line. SIGHUP: read the configuration file again and hot-reload its `model:`
// (calls in flight finish on the old model; a model that fails to load leaves the old one serving).
#include <malloc.h>

#include <cstdlib>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <glog/logging.h>

#include "cmn/common/main_init.h"
#include "cmn/engine/replica.h"
#include "cmn/model/fused_kernels.h"
#include "cmn/model/runtime.h"
#include "cmn/server/config.h"
#include "cmn/server/server.h"
#include "cmn/server/serving_model.h"

int main(int argc, char** argv) {
  // glibc gives each busy thread its own malloc arena (up to 8 per core); with dozens of gRPC handler threads
  // holding DICOM bytes the resident size settled ~20 % higher than with 2 arenas, at the same throughput
  // (bench/load_grpc.py, concurrency 32). MALLOC_ARENA_MAX in the environment wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  // Every thread created from here on (LibTorch, gRPC, the engine) inherits the mask, so SIGTERM and SIGINT
  // reach only stop_signals.wait() below and never interrupt a decode.
  const cmn::StopSignals stop_signals(/*reload=*/true);
  cmn::init_logging(argv[0]);

  CLI::App app{"cmn-server: chest radiograph DICOM studies in, draft reports out (gRPC cmn.v1.ReportService)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  app.add_option("--config", config_path, "YAML configuration (configs/server.yaml documents every key)");
  app.add_option("overrides", overrides, "dotted.key=value overrides, e.g. server.port=0 model.bundle=DIR");
  app.add_flag("--check", check_only, "load the config and the model, print the model identity, and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto config = cmn::server::load_server_config(config_path, overrides);
  if (!config.ok()) {
    LOG(ERROR) << "cmn-server: bad configuration: " << config.status().message();
    return 1;
  }
  cmn::model::warn_if_slow_blas();
  cmn::model::set_threads(config->model.threads);  // 0 = the process's CPU budget (affinity, cgroup cpu.max)
  // Which fused decode-step kernels this CPU runs (README "The decode step"): a host without AVX2 decodes ~2x
  // slower on ATen's ops alone, and an operator comparing two hosts' latencies should see why.
  LOG(INFO) << "cmn-server: fused CPU kernels: " << cmn::model::fused_kernels_isa()
            << (std::string(cmn::model::fused_kernels_isa()) == "none" ? " (no AVX2: ATen's ops only)" : "");

  auto model = cmn::server::load_serving_model(config->model);
  if (!model.ok()) {
    LOG(ERROR) << "cmn-server: cannot load the model: " << model.status().message();
    return 1;
  }
  if (model->info.untrained) {
    LOG(WARNING) << "cmn-server: model '" << model->info.name
                 << "' is UNTRAINED (random weights): every report it writes is meaningless";
  }
  if (check_only) {
    // The device and precision too: a start on `model.device: cuda` without CUDA, or `model.precision: bf16` on a
    // CPU without bf16 instructions, must fail here, not only at serve time.
    if (auto replica = cmn::server::make_serving_replica(config->model, model->model); !replica.ok()) {
      LOG(ERROR) << "cmn-server: " << replica.status().message();
      return 1;
    }
    std::cout << "ok: model " << model->info.name << " version " << model->info.version << " " << model->info.digest
              << (model->info.untrained ? " untrained" : "") << "\n";
    return 0;
  }
  auto server = cmn::server::ReportServer::serve(*config, std::move(*model));
  if (!server.ok()) {
    LOG(ERROR) << "cmn-server: " << server.status().message();
    return 1;
  }
  // Machine-readable start line (tests and scripts read the ports from it).
  std::cout << "cmn-server listening port=" << (*server)->port() << " metrics_port=" << (*server)->metrics_port()
            << " health_port=" << (*server)->health_port() << std::endl;

  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(config->server.shutdown_grace_s * 1000));
  (*server)->set_model_options_source([&]() -> absl::StatusOr<cmn::server::ModelOptions> {
    auto again = cmn::server::load_server_config(config_path, overrides);
    if (!again.ok()) return again.status();
    return again->model;
  });
  std::thread stopper([&] {
    int signal_number = stop_signals.wait();
    for (; signal_number == SIGHUP; signal_number = stop_signals.wait()) {
      LOG(INFO) << "cmn-server: SIGHUP: reloading the model from " << (config_path.empty() ? "the command line" : config_path);
      if (auto info = (*server)->reload(); !info.ok()) {
        LOG(ERROR) << "cmn-server: reload failed, the previous model keeps serving: " << info.status().message();
      }
    }
    LOG(INFO) << "cmn-server: signal " << signal_number << ": draining (at most "
              << config->server.shutdown_grace_s << " s), then exiting";
    (*server)->shutdown(grace);
  });
  (*server)->wait();
  stopper.join();
  server->reset();
  LOG(INFO) << "cmn-server: stopped";
  return 0;
}
