// Attention maps (issue 4): the captured cross-attention is the decoding pass's own for the chosen
// hypothesis, capturing it changes nothing in the report, and the per-sentence maps/PNGs follow the
// reference's plot (heads and tokens averaged, per view 7x7, min-max normalised JET overlay).
#include "cmn/pipeline/attention.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "cmn/model/config.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/runtime.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/report_generator.h"

namespace {

std::string shared(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/" + relative; }

cmn::pipeline::ReportGenerator parity_generator() {
  auto config = cmn::model::read_model_config(shared("parity/dev/config.json"));
  auto annotation = cmn::pipeline::read_annotation(shared("data/iu_xray/annotation.json"));
  EXPECT_TRUE(annotation.ok());
  std::vector<std::string> reports;
  for (const auto& e : annotation->train) reports.push_back(e.report);
  auto tokenizer = cmn::model::Tokenizer::build(reports, cmn::model::cleaning_rule_for_dataset(config.dataset_name),
                                                static_cast<int>(config.threshold));
  config.vocab_size = tokenizer.vocab_size();
  return cmn::pipeline::ReportGenerator(cmn::model::load_r2gencmn(shared("parity/dev/model.pth"), config),
                                        std::move(tokenizer), {});
}

std::vector<std::vector<std::string>> fixture_studies() {
  std::vector<std::vector<std::string>> studies(2);
  for (int s = 0; s < 2; ++s) {
    for (int v = 0; v < 4; ++v) {
      studies[s].push_back(shared("parity/dev/images/study" + std::to_string(s) + "_view" + std::to_string(v) + ".png"));
    }
  }
  return studies;
}

TEST(AttentionMaps, CaptureIsTheDecodingPassAndChangesNothing) {
  cmn::model::set_threads(1);
  auto generator = parity_generator();
  cmn::pipeline::GeneratorOptions options;
  options.decoding.beam_size = 3;
  options.decoding.max_length = 30;
  const auto plain = generator.generate_files(fixture_studies(), options);
  options.attention = true;
  const auto with = generator.generate_files(fixture_studies(), options);
  ASSERT_EQ(plain.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    ASSERT_TRUE(plain[s].ok() && with[s].ok());
    EXPECT_TRUE(plain[s]->token_attention.empty());  // off by default: nothing captured
    EXPECT_EQ(with[s]->token_ids, plain[s]->token_ids);
    EXPECT_EQ(with[s]->report, plain[s]->report);
    const auto& captured = with[s]->token_attention;
    ASSERT_FALSE(captured.empty());
    std::vector<float> values = captured.values;
    const auto att = torch::from_blob(values.data(), {captured.layers, captured.tokens, captured.patches})
                         .clone();                                         // [layers,T,S]
    const int64_t t = static_cast<int64_t>(with[s]->token_ids.size());
    ASSERT_EQ(att.sizes(), (std::vector<int64_t>{3, t, 4 * 49}));
    EXPECT_TRUE(torch::allclose(att.sum(-1), torch::ones({3, t}), 1e-5, 1e-5));  // softmax rows

    // Independent check: the teacher-forced forward over [0, ids..., 0] keeps each layer's src_attn
    // probabilities [1,h,T+1,S]; row t must equal the captured row t (same prefix, same memory).
    std::vector<torch::Tensor> views;
    const auto studies = fixture_studies();
    for (const auto& path : studies[s]) {
      auto image = cmn::preprocessing::load_model_input(path, options.image);
      ASSERT_TRUE(image.ok());
      views.push_back(torch::from_blob(image->data.data(), {3, 224, 224}).clone());
    }
    auto images = torch::stack(views).unsqueeze(0);                       // [1,4,3,224,224]
    std::vector<int64_t> seq = {0};
    seq.insert(seq.end(), with[s]->token_ids.begin(), with[s]->token_ids.end());
    seq.push_back(0);
    cmn::model::R2GenCMN model(generator.replica().model().network());
    torch::NoGradGuard no_grad;
    auto att_feats = model->extract(images).att;                           // [1,196,2048]
    model->encoder_decoder->forward(att_feats, torch::tensor(seq).unsqueeze(0));
    for (int64_t l = 0; l < 3; ++l) {
      auto& layer = model->encoder_decoder->model->decoder_layer(static_cast<size_t>(l));
      auto tf = layer.src_attn->last_attention.mean(1)[0].narrow(0, 0, t);  // [T,S]
      EXPECT_TRUE(torch::allclose(tf, att[l], 1e-4, 1e-5)) << "layer " << l << " max diff "
                                                            << (tf - att[l]).abs().max().item<float>();
    }
  }
}

TEST(AttentionMaps, SentencesAverageTheirTokensPerLayerAndView) {
  cmn::pipeline::StudyReport report;
  cmn::model::Tokenizer tokenizer = cmn::model::Tokenizer::build({"heart normal . lungs clear ."},
                                                                 cmn::model::CleaningRule::kIuXray, 1);
  for (const char* w : {"heart", "normal", ".", "lungs", "clear"}) report.token_ids.push_back(tokenizer.id_of(w));
  const auto random = torch::rand({2, 5, 2 * 49});                         // [layers,T,S]
  report.token_attention.layers = 2;
  report.token_attention.tokens = 5;
  report.token_attention.patches = 2 * 49;
  report.token_attention.values.assign(random.data_ptr<float>(), random.data_ptr<float>() + random.numel());
  auto maps = cmn::pipeline::sentence_attention_maps(report.token_ids, report.token_attention, tokenizer, 2);
  ASSERT_TRUE(maps.ok()) << maps.status();
  ASSERT_EQ(maps->size(), 2u * 2 * 2);  // sentences x layers x views
  const auto& m = (*maps)[7];            // sentence 1, layer 1, view 1: tokens 3..4, patches 49..97
  EXPECT_EQ(m.sentence, 1);
  EXPECT_EQ(m.text, "lungs clear");
  EXPECT_EQ((*maps)[0].text, "heart normal .");
  auto want = random[1].narrow(0, 3, 2).mean(0).narrow(0, 49, 49);
  for (int i = 0; i < 49; ++i) EXPECT_NEAR(m.weights[i], want[i].item<float>(), 1e-6);

  // PNG: the hottest patch is red (JET's top) blended with the image, the coldest blue.
  cmn::preprocessing::FloatImage view;
  view.height = view.width = 224;
  view.data.assign(3 * 224 * 224, 0.0f);  // normalised 0 = the ImageNet mean grey-ish colour
  cmn::pipeline::AttentionMap one = m;
  std::fill(one.weights.begin(), one.weights.end(), 0.0f);
  one.weights[0] = 1.0f;  // top-left patch
  auto png = cmn::pipeline::render_attention_png(one, view, {});
  ASSERT_TRUE(png.ok()) << png.status();
  cv::Mat decoded = cv::imdecode(std::vector<uint8_t>(png->begin(), png->end()), cv::IMREAD_COLOR);
  ASSERT_EQ(decoded.rows, 224);
  const auto hot = decoded.at<cv::Vec3b>(0, 0), cold = decoded.at<cv::Vec3b>(223, 223);  // BGR
  EXPECT_GT(hot[2], hot[0]);
  EXPECT_GT(cold[0], cold[2]);

  report.token_attention = {};
  EXPECT_EQ(cmn::pipeline::sentence_attention_maps(report.token_ids, report.token_attention, tokenizer, 2).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
