#pragma once
// Architecture and decoding settings, named as R2GenCMN's command-line arguments (main_train.py), so the
// `args` JSON of a published checkpoint (see shared/parity/dev/config.json) reads directly.
#include <cstdint>
#include <string>

namespace cmn::model {

struct ModelConfig {
  // --- architecture (must match the checkpoint) ---
  std::string visual_extractor = "resnet101";  // only ResNet-101 is implemented
  int64_t d_vf = 2048;          // visual feature width (ResNet-101 layer4 channels)
  int64_t d_model = 512;        // transformer width
  int64_t d_ff = 512;           // feed-forward inner width
  int64_t num_heads = 8;        // attention heads (also the memory's heads)
  int64_t num_layers = 3;       // encoder and decoder layers
  int64_t cmm_size = 2048;      // memory slots (rows of memory_matrix)
  int64_t cmm_dim = 512;        // memory slot width (must equal d_model)
  int64_t topk = 32;            // memory slots each query attends to
  int64_t use_bn = 0;           // att_embed BatchNorm; only 0 (the published setting) is supported
  double dropout = 0.1;         // transformer dropout (training only)
  double drop_prob_lm = 0.5;    // att_embed dropout (training only)
  int64_t vocab_size = 0;       // tokens without id 0; 0 = take it from the tokenizer or the checkpoint
  int64_t views = 0;            // images per study, 1..4; 0 = dataset default (iu_xray 2, mimic_cxr 1)
  std::string dataset_name = "iu_xray";  // selects the cleaning rule and the default view count
  int64_t threshold = 3;        // vocabulary count threshold
  // Image-report alignment head (alignment.h, issue 14). 0 queries = none: the published checkpoints have none.
  int64_t align_queries = 0;    // learned query tokens (BLIP-2: 32)
  int64_t align_layers = 1;     // layers of each of its three stacks (queries, text, matching)
  int64_t align_dim = 128;      // width of the shared contrastive space
  // Retrieval index (issue 14 item 5): ITC embeddings and token ids of N training reports, stored as buffers of
  // the alignment head; set by cmn-train (align.retrieval_index), never by hand. 0 = no index.
  int64_t align_index_size = 0;    // N reports
  int64_t align_index_length = 0;  // T: tokens per stored report (0-padded)

  // --- decoding defaults ---
  int64_t max_seq_length = 60;  // generated tokens at most (the trailing 0 included)
  int64_t beam_size = 3;
  std::string sample_method = "beam_search";  // beam_search | greedy | sample
  double temperature = 1.0;
  int64_t block_trigrams = 1;   // greedy/sampling only (beam size 1), as the reference
  std::string length_penalty;   // "" | "wu_<alpha>" | "avg_<alpha>"
  int64_t group_size = 1;       // diverse beam search groups; only 1 is supported
  int64_t seed = 9223;          // sampling seed

  int64_t effective_views() const { return views > 0 ? views : (dataset_name == "iu_xray" ? 2 : 1); }
};

// Reads a flat JSON object of R2GenCMN argument names. Unknown keys are ignored (R2GenCMN's args hold
// paths and trainer settings too); a key of the wrong type, an unsupported value (visual_extractor other than
// resnet101, use_bn != 0, group_size != 1, views outside 1..4, d_model % num_heads != 0, cmm_dim != d_model)
// or malformed JSON is a c10::Error naming the key and the file.
ModelConfig read_model_config(const std::string& json_path);
ModelConfig parse_model_config(const std::string& json_text, const std::string& source_name);
void validate_model_config(const ModelConfig& config);

}  // namespace cmn::model
