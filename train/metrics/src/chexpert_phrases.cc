// The CheXpert labeler's mention and unmention phrases, reproduced from stanfordmlgroup/chexpert-labeler (MIT
// licence, Copyright (c) 2019 Stanford Machine Learning Group): phrases/mention/*.txt, phrases/unmention/*.txt
// and the positional unmentions built in stages/extract.py (add_unmention_phrases). The files' "_" stands for a
// space (" mediastinum" must follow a space, " line " stands alone, "drain " is followed by one).
// Lung Opacity, Pneumothorax and Support Devices are the repository's lists as first published
// (mention_phrases/airspace_opacity.txt, pneumothorax.txt, support_devices.txt), which the later phrases/mention
// files kept; "Pleural Effusion"'s unmention is unmention_phrases/pleural_effusion.txt.
#include "chexpert_phrases.h"

namespace cmn::metrics::chexpert_detail {
namespace {

std::vector<std::string> positional_unmentions(const std::vector<std::string>& mentions, bool drop_the,
                                               const std::vector<std::string>& skip) {
  // extract.py: ["over the", "overly the", "in the"] x ["", " superior", " left", " right"], then " " + mention
  // (Cardiomegaly's with "the " removed and without "cardiomegaly" / "cardiac enlargement").
  std::vector<std::string> out;
  for (const char* e1 : {"over the", "overly the", "in the"}) {
    for (const char* e2 : {"", " superior", " left", " right"}) {
      for (std::string m : mentions) {
        bool skipped = false;
        for (const auto& s : skip) skipped = skipped || s == m;
        if (skipped) continue;
        if (drop_the) {
          for (auto p = m.find("the "); p != std::string::npos; p = m.find("the ")) m.erase(p, 4);
        }
        out.push_back(std::string(e1) + e2 + " " + m);
      }
    }
  }
  return out;
}

std::vector<ObservationPhrases> build() {
  const std::vector<std::string> cardiomegaly = {"cardiomegaly",   "the heart",      "heart size",
                                                 "cardiac enlargement", "cardiac size", "cardiac shadow",
                                                 "cardiac contour", "cardiac silhouette", "enlarged heart"};
  const std::vector<std::string> enlarged_cm = {" mediastinum",          "cardiomediastinum",
                                                "contour",               "mediastinal configuration",
                                                "mediastinal silhouette", "pericardial silhouette",
                                                "cardiac silhouette and vascularity"};
  std::vector<ObservationPhrases> t;
  t.push_back({Observation::kNoFinding,
               {"emphysema",     "blunt",          "density",       "elevation",      "eventration",
                "scoliosis",     "degenera",       "calcifi",       "hyperinflation", "bronchospasm",
                "asthma",        "hernia",         "copd",          "interstitial markings", "plaque",
                "osteophytosis", "aortic disease", "bronchiolitis", "airways disease", "thickening",
                "cephalization", "aspiration",     "bullae",        "hyperinflat",    "contusion",
                "atherosclero",  "osteopenia",     "metastasis",    "granuloma",      "pneumomediastinum",
                "pneumoperitoneum", "osteodystrophy", "cuffing",    "irregular lucency", "inflam",
                "fissure",       "hypertension",   "prominen",      "kyphosis",       "defib",
                "hyperexpansion", "bullet",        "reticula",      "thoracentesis",  "bronchitis",
                "volume loss",   "deformity",      "hemorrhage",    "hematoma",       "radiopaque",
                "aerophagia",    "arthropathy",    "tracheostomy"},
               {}});
  t.push_back({Observation::kEnlargedCardiomediastinum, enlarged_cm, positional_unmentions(enlarged_cm, false, {})});
  t.push_back({Observation::kCardiomegaly, cardiomegaly,
               positional_unmentions(cardiomegaly, true, {"cardiomegaly", "cardiac enlargement"})});
  t.push_back({Observation::kLungLesion,
               {"mass", "nodular density", "nodular densities", "nodular opacity", "nodular opacities",
                "nodular opacification", "nodule", "lump", "cavitary lesion", "carcinoma", "neoplasm", "tumor"},
               {"calcified nodul", "massive", "massengale"}});
  t.push_back({Observation::kLungOpacity,
               {"opaci", "decreased translucency", "increased density", "airspace disease", "air-space disease",
                "air space disease", "infiltrate", "infiltration", "interstitial marking", "interstitial pattern",
                "interstitial lung", "reticular pattern", "reticular marking", "reticulation", "parenchymal scarring",
                "peribronchial thickening", "wall thickening", "scar"},
               {"pleural scar"}});
  t.push_back({Observation::kEdema,
               {"edema", "heart failure", "chf", "vascular congestion", "pulmonary congestion", "indistinctness",
                "vascular prominence"},
               {}});
  t.push_back({Observation::kConsolidation, {"consolidat"}, {}});
  t.push_back({Observation::kPneumonia, {"pneumonia", "infection", "infectious process", "infectious"}, {}});
  t.push_back({Observation::kAtelectasis, {"atelecta", "collapse"}, {}});
  t.push_back({Observation::kPneumothorax, {"pneumothorax", "pneumothoraces"}, {}});
  t.push_back({Observation::kPleuralEffusion, {"pleural fluid", "effusion"}, {"pericardial effusion"}});
  t.push_back({Observation::kPleuralOther,
               {"pleural thickening", "fibrosis", "fibrothorax", "pleural scar", "pleural parenchymal scar",
                "pleuro-parenchymal scar", "pleuro-pericardial scar"},
               {}});
  t.push_back({Observation::kFracture, {"fracture"}, {}});
  t.push_back({Observation::kSupportDevices,
               {"pacer", " line ", "lines", "picc", "tube", "valve", "catheter", "pacemaker", "hardware",
                "arthroplast", "marker", "icd", "defib", "device", "drain ", "plate", "screw", "cannula",
                "apparatus", "coil", "support", "equipment", "mediport"},
               {}});
  return t;
}

}  // namespace

const std::vector<ObservationPhrases>& phrase_table() {
  static const std::vector<ObservationPhrases> table = build();
  return table;
}

}  // namespace cmn::metrics::chexpert_detail
