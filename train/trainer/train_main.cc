// cmn-train CONFIG.yaml [section.key=value ...] [--resume PATH]
//   Trains (run_type train / train_val) or evaluates (val / test) R2GenCMN as configs/*.yaml describe.
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "cmn/common/main_init.h"
#include "cmn/train/config.h"
#include "cmn/train/trainer.h"

int main(int argc, char** argv) {
  cmn::init_logging(argv[0]);  // the trainer LOGs; without this glog warns before the first line
  CLI::App app{"cmn-train: train or evaluate R2GenCMN (YAML recipe + dotted overrides)"};
  std::string config_path;
  std::vector<std::string> overrides;
  std::string resume;
  std::string run_type;
  bool print_config = false;
  app.add_option("config", config_path, "recipe YAML (configs/iu_xray.yaml, configs/mimic_cxr.yaml, ...)")->required();
  app.add_option("overrides", overrides, "section.key=value overrides, e.g. optim.lr_ed=5e-4 data.batch_size=8");
  app.add_option("--resume", resume, "continue from a cmn-train checkpoint (save_dir, .state or .pth beside it)");
  app.add_option("--run-type", run_type, "train | train_val | val | test (overrides trainer.run_type)");
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");
  CLI11_PARSE(app, argc, argv);

  if (!resume.empty()) overrides.push_back("trainer.resume=" + resume);
  if (!run_type.empty()) overrides.push_back("trainer.run_type=" + run_type);
  cmn::train::TrainConfig config;
  try {
    config = cmn::train::load_train_config(config_path, overrides);
  } catch (const c10::Error& e) {
    std::cerr << "cmn-train: " << e.msg() << std::endl;
    return 1;
  }
  if (print_config) {
    std::cout << cmn::train::to_yaml(config);
    return 0;
  }
  try {
    cmn::train::Trainer trainer(config);
    trainer.run();
  } catch (const c10::Error& e) {
    std::cerr << "cmn-train: " << e.msg() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "cmn-train: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
