// The memory query's two lookups (cmn::model::MultiThreadMemoryImpl::QueryPath): our index_select of the
// top-k values and R2GenCMN's expand + torch.gather (modules/base_cmn.py, memory_querying_responding) give the
// same loss and the same gradient on every parameter of a tiny BaseCMN. cmn-train-bench measures what the
// reference form costs at full size.
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cmn/model/encoder_decoder.h"
#include "cmn/train/loss.h"

namespace cmn::train {
namespace {

using QueryPath = model::MultiThreadMemoryImpl::QueryPath;

model::ModelConfig tiny_config() {
  model::ModelConfig c;
  c.d_vf = 12;
  c.d_model = 16;
  c.d_ff = 24;
  c.num_heads = 2;
  c.num_layers = 2;
  c.cmm_size = 40;  // M
  c.cmm_dim = 16;
  c.topk = 5;       // k < M, so the selection matters
  c.vocab_size = 9;
  return c;
}

void set_all_dropout(model::BaseCMNImpl& m, double p) {
  for (auto& module : m.modules()) {
    if (auto* d = module->as<torch::nn::DropoutImpl>()) d->options.p(p);
  }
}

struct StepResult {
  double loss = 0.0;
  std::map<std::string, torch::Tensor> grads;
};

// One teacher-forced loss + backward on a fixed batch: 3 studies x 7 patches, reports of 6 ids (padded).
StepResult loss_and_grads(model::BaseCMNImpl& m, QueryPath path, uint64_t dropout_seed) {
  m.cmn->set_query_path(path);
  m.zero_grad();
  torch::manual_seed(11);
  auto att = torch::randn({3, 7, 12});                                                // [B,S,d_vf]
  auto targets = torch::tensor({0, 3, 4, 5, 2, 0, 0, 7, 1, 0, 0, 0, 0, 9, 8, 6, 4, 0},
                               torch::kLong).view({3, 6});                            // [B,L]
  auto masks = (targets > 0).to(torch::kFloat);
  masks.select(1, 0).fill_(1.0);
  // the final 0 of each report is scored too (R2GenCMN's mask covers bos .. eos)
  masks.index_put_({0, 5}, 1.0);
  masks.index_put_({1, 3}, 1.0);
  masks.index_put_({2, 5}, 1.0);
  torch::manual_seed(dropout_seed);
  auto loss = language_model_loss(m.forward(att, targets), targets, masks);
  loss.backward();
  StepResult r;
  r.loss = loss.item<double>();
  for (const auto& p : m.named_parameters()) {
    if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
  }
  return r;
}

TEST(MemoryQueryPathTest, ReferenceExpandGatherEqualsTopkGatherLossAndGradients) {
  torch::manual_seed(3);
  model::BaseCMN m(tiny_config());
  m->train();
  set_all_dropout(*m, 0.0);
  ASSERT_EQ(m->cmn->query_path(), QueryPath::kGather);  // the default is ours

  const auto ours = loss_and_grads(*m, QueryPath::kGather, 1);
  const auto ref = loss_and_grads(*m, QueryPath::kReferenceExpand, 1);
  EXPECT_NEAR(ours.loss, ref.loss, 1e-6);
  ASSERT_EQ(ours.grads.size(), ref.grads.size());
  ASSERT_TRUE(ours.grads.count("cmn.linears.0.weight"));  // the memory's query projection gets a gradient
  ASSERT_TRUE(ours.grads.count("memory_matrix"));         // and so does the memory itself (via keys/values)
  for (const auto& [name, g] : ours.grads) {
    ASSERT_TRUE(ref.grads.count(name)) << name;
    EXPECT_TRUE(torch::allclose(g, ref.grads.at(name), 1e-4, 1e-6))
        << name << " max |diff| " << (g - ref.grads.at(name)).abs().max().item<double>();
  }
  // A non-zero gradient on the memory matrix: the comparison above is not between two zero tensors.
  EXPECT_GT(ours.grads.at("memory_matrix").abs().sum().item<double>(), 0.0);
}

TEST(MemoryQueryPathTest, DropoutDrawsTheSameMaskOnBothPaths) {
  // Our path permutes the top-k weights to the reference's [B,h,T,k] order before dropout, so a seeded run
  // drops the same weights: equal losses with every dropout active.
  torch::manual_seed(5);
  model::BaseCMN m(tiny_config());
  m->train();
  set_all_dropout(*m, 0.3);
  const auto ours = loss_and_grads(*m, QueryPath::kGather, 42);
  const auto ref = loss_and_grads(*m, QueryPath::kReferenceExpand, 42);
  EXPECT_NEAR(ours.loss, ref.loss, 1e-6);
  EXPECT_TRUE(torch::allclose(ours.grads.at("memory_matrix"), ref.grads.at("memory_matrix"), 1e-4, 1e-6));
}

}  // namespace
}  // namespace cmn::train
