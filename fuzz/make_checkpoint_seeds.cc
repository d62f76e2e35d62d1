// cmn-make-checkpoint-seeds OUT_DIR: the seed archives of corpus/checkpoint/, written by cmn's own
// write_checkpoint (the torch.save layout that read_checkpoint must accept): a few tiny state_dicts in the
// shapes and options the reader distinguishes (R2GenCMN wrapper or bare, OrderedDict or dict, dtypes, a CUDA
// location, an empty tensor, a shared storage is not written by write_checkpoint). Deterministic values, a
// few hundred bytes of tensor data each, so libFuzzer's mutations reach the pickle and the zip fields.
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "cmn/model/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  using cmn::model::CheckpointWriteOptions;
  using cmn::model::StateDict;
  const StateDict small = {
      {"fc.weight", torch::arange(6, torch::kFloat).reshape({2, 3})},
      {"fc.bias", torch::tensor({0.5f, -1.0f})},
  };
  CheckpointWriteOptions wrapper;  // {epoch, state_dict (OrderedDict), optimizer, monitor_best}
  wrapper.epoch = 3;
  wrapper.monitor_best = 0.25;
  wrapper.archive_name = "wrapper";
  cmn::model::write_checkpoint(out + "/wrapper.pth", small, wrapper);

  CheckpointWriteOptions bare;
  bare.r2gencmn_wrapper = false;
  bare.ordered_dict = false;
  bare.archive_name = "bare";
  cmn::model::write_checkpoint(out + "/bare_dict.pth", small, bare);

  const StateDict dtypes = {
      {"half", torch::arange(4, torch::kFloat).to(torch::kHalf)},
      {"long", torch::tensor({int64_t{1}, int64_t{-2}, int64_t{3}})},
      {"bool", torch::tensor({true, false})},
      {"double", torch::tensor({1.0, 2.0}, torch::kDouble)},
      {"empty", torch::empty({0, 3})},
      {"scalar", torch::tensor(7.0f)},
  };
  CheckpointWriteOptions cuda;
  cuda.location = "cuda:0";
  cuda.archive_name = "dtypes";
  cmn::model::write_checkpoint(out + "/dtypes_cuda.pth", dtypes, cuda);

  CheckpointWriteOptions empty;
  empty.archive_name = "empty";
  cmn::model::write_checkpoint(out + "/empty.pth", {}, empty);
  return 0;
}
