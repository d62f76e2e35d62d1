#pragma once
// The parity model and its fixture studies for the engine's tests (replica_test.cc, flight_test.cc).
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cmn/engine/replica.h"
#include "cmn/model/runtime.h"
#include "cmn/pipeline/model_loader.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::engine::testing {

inline std::string shared(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/" + relative; }

// The R2GenCMN model of the parity fixtures (4 views), through the one loader.
inline const std::shared_ptr<const Model>& parity_model() {
  static const std::shared_ptr<const Model> model = [] {
    model::set_threads(1);
    pipeline::ModelSource source;
    source.r2gencmn = shared("parity/dev/model.pth");
    source.args = shared("parity/dev/config.json");
    source.annotation = shared("data/iu_xray/annotation.json");
    auto loaded = pipeline::load_model(source);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? loaded->model : nullptr;
  }();
  return model;
}

// The fixture's two studies as preprocessing gives them (4 views each).
inline std::vector<std::vector<preprocessing::FloatImage>> fixture_studies() {
  std::vector<std::vector<preprocessing::FloatImage>> studies(2);
  for (int s = 0; s < 2; ++s) {
    for (int v = 0; v < 4; ++v) {
      auto image = preprocessing::load_model_input(
          shared("parity/dev/images/study" + std::to_string(s) + "_view" + std::to_string(v) + ".png"));
      EXPECT_TRUE(image.ok()) << image.status();
      studies[static_cast<size_t>(s)].push_back(image.ok() ? std::move(*image) : preprocessing::FloatImage{});
    }
  }
  return studies;
}

inline model::DecodingOptions beam(int64_t beam_size, int64_t max_length) {
  model::DecodingOptions d;
  d.beam_size = beam_size;
  d.max_length = max_length;
  return d;
}

inline std::unique_ptr<Replica> cpu_replica() {
  auto replica = Replica::create(parity_model(), "cpu");
  EXPECT_TRUE(replica.ok()) << replica.status();
  return replica.ok() ? std::move(*replica) : nullptr;
}

}  // namespace cmn::engine::testing
