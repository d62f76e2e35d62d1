#pragma once
// Multi-process data parallelism over torch.distributed's c10d, as Debian's LibTorch 1.13 allows it: a TCPStore
// for the rendezvous (rank 0 serves it) and ProcessGroupGloo for the collectives (CPU tensors). Needs the gloo
// headers of Debian's libgloo-dev at build time (ProcessGroupGloo.hpp includes them; the symbols are in
// libtorch_cpu); without them cmn_train builds without this file's implementation (CMN_HAVE_GLOO undefined on
// distributed.cc), data_parallel_available() is false and DataParallel's constructor throws.
// cmn-train uses it when WORLD_SIZE > 1 in its environment (cached-feature path only; see Trainer).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace cmn::train {

struct DistributedOptions {
  int rank = 0;                        // RANK
  int world_size = 1;                  // WORLD_SIZE
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR (rank 0 serves the TCPStore there)
  int master_port = 29500;             // MASTER_PORT
};
// torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (absent = the defaults above). A malformed
// or out-of-range value is an error naming the variable.
DistributedOptions distributed_from_env();

// Whether this build has DataParallel (gloo headers found at configure time).
bool data_parallel_available();

// Every world_size-th element starting at rank: the rank's shard of an epoch's (seeded, identical) order.
std::vector<int64_t> shard(const std::vector<int64_t>& order, int rank, int world_size);

class DataParallel {
 public:
  explicit DataParallel(const DistributedOptions& options);
  ~DataParallel();
  // Rank 0's parameters and buffers to every rank (start of training: identical replicas).
  void broadcast_parameters(torch::nn::Module& module);
  // Sum of every defined gradient over the ranks, divided by world_size (one flat buffer, one allreduce): with
  // equal shards, the gradient of the mean loss over the union batch.
  void average_gradients(torch::nn::Module& module);
  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

 private:
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cmn::train
