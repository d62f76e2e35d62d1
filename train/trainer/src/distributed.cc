#include "cmn/train/distributed.h"

#include <cstdlib>
#include <string>

#ifdef CMN_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace cmn::train {

namespace {

int env_int(const char* name, int fallback, int min_value) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && x >= min_value && x <= 65535, "environment variable ", name,
              " must be an integer >= ", min_value, ", got '", v, "'");
  return static_cast<int>(x);
}

}  // namespace

DistributedOptions distributed_from_env() {
  DistributedOptions o;
  o.rank = env_int("RANK", 0, 0);
  o.world_size = env_int("WORLD_SIZE", 1, 1);
  o.master_port = env_int("MASTER_PORT", o.master_port, 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') o.master_addr = a;
  TORCH_CHECK(o.rank < o.world_size, "environment variable RANK (", o.rank, ") must be < WORLD_SIZE (", o.world_size, ")");
  return o;
}

std::vector<int64_t> shard(const std::vector<int64_t>& order, int rank, int world_size) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "shard: rank ", rank, " of ", world_size);
  std::vector<int64_t> out;
  for (size_t i = static_cast<size_t>(rank); i < order.size(); i += static_cast<size_t>(world_size)) out.push_back(order[i]);
  return out;
}

#ifdef CMN_HAVE_GLOO
bool data_parallel_available() { return true; }

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

DataParallel::DataParallel(const DistributedOptions& options) : options_(options), impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
              "DataParallel: rank ", options.rank, " of world_size ", options.world_size);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(options.master_port);
  so.isServer = options.rank == 0;
  so.numWorkers = options.world_size;
  impl_->store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);
  auto go = c10d::ProcessGroupGloo::Options::create();
  go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.master_addr));
  impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, options.rank, options.world_size, go);
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast_parameters(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p);
  for (auto& b : module.buffers()) tensors.push_back(b);
  if (tensors.empty()) return;
  std::vector<torch::Tensor> flat = {torch::cat([&] {
    std::vector<torch::Tensor> v;
    for (auto& t : tensors) v.push_back(t.detach().reshape({-1}).to(torch::kFloat));
    return v;
  }())};                                                             // [sum of numel] float32
  impl_->group->broadcast(flat)->wait();
  int64_t at = 0;
  for (auto& t : tensors) {
    t.copy_(flat[0].narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
}

void DataParallel::average_gradients(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (auto& p : module.parameters()) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return;
  std::vector<torch::Tensor> v;
  for (auto& g : grads) v.push_back(g.reshape({-1}));
  std::vector<torch::Tensor> flat = {torch::cat(v)};  // [sum of numel]: one allreduce for all gradients
  impl_->group->allreduce(flat)->wait();
  flat[0].div_(static_cast<double>(options_.world_size));
  int64_t at = 0;
  for (auto& g : grads) {
    g.copy_(flat[0].narrow(0, at, g.numel()).view(g.sizes()));
    at += g.numel();
  }
}
#else
bool data_parallel_available() { return false; }
struct DataParallel::Impl {};
DataParallel::DataParallel(const DistributedOptions& options) : options_(options) {
  TORCH_CHECK(false, "DataParallel: this build has no gloo headers (install Debian's libgloo-dev and re-run cmake)");
}
DataParallel::~DataParallel() = default;
void DataParallel::broadcast_parameters(torch::nn::Module&) {}
void DataParallel::average_gradients(torch::nn::Module&) {}
#endif

}  // namespace cmn::train
