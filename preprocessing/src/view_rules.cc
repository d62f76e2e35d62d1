// View classification (DCMTK-free; declared in dcmtk_bridge.h, the rules documented in dicom.h).
#include <cctype>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "dcmtk_bridge.h"

namespace cmn::preprocessing {
namespace internal {
namespace {

enum class TextView { kNone, kPA, kAP, kLateral, kAmbiguous };

TextView view_from_words(const std::string& text, std::string* word) {
  TextView found = TextView::kNone;
  for (absl::string_view token : absl::StrSplit(text, absl::ByAnyChar(" \t,;:/\\_-.()[]+&"), absl::SkipEmpty())) {
    const std::string t = absl::AsciiStrToUpper(token);
    TextView v = TextView::kNone;
    if (t == "PA" || t == "POSTEROANTERIOR") v = TextView::kPA;
    if (t == "AP" || t == "ANTEROPOSTERIOR") v = TextView::kAP;
    if (t == "LAT" || t == "LATERAL" || t == "LL" || t == "RL" || t == "LLAT" || t == "RLAT") v = TextView::kLateral;
    if (v == TextView::kNone) continue;
    if (found != TextView::kNone && found != v) return TextView::kAmbiguous;
    found = v;
    *word = t;
  }
  return found;
}

}  // namespace

ViewPosition classify_view(const ViewAttributes& a, std::string* evidence) {
  std::string laterality_note;
  if (!a.image_laterality.empty()) laterality_note = absl::StrCat("; ImageLaterality=", a.image_laterality);
  auto decide = [&](ViewPosition v, const std::string& why) {
    *evidence = why + laterality_note;
    return v;
  };
  // 1. ViewPosition
  const std::string vp = absl::AsciiStrToUpper(a.view_position);
  if (vp == "PA") return decide(ViewPosition::kPA, "ViewPosition=PA");
  if (vp == "AP") return decide(ViewPosition::kAP, "ViewPosition=AP");
  if (vp == "LL" || vp == "RL" || vp == "LAT" || vp == "LATERAL" || vp == "LLAT" || vp == "RLAT") {
    return decide(ViewPosition::kLateral, "ViewPosition=" + vp);
  }
  // 2. View Code Sequence
  for (size_t i = 0; i < a.view_code_values.size(); ++i) {
    const std::string& code = a.view_code_values[i];
    const std::string meaning = i < a.view_code_meanings.size() ? a.view_code_meanings[i] : "";
    const std::string why = absl::StrCat("ViewCodeSequence=", code, meaning.empty() ? "" : " (" + meaning + ")");
    if (code == "R-10214" || code == "399066004") return decide(ViewPosition::kPA, why);
    if (code == "R-10206" || code == "399348003") return decide(ViewPosition::kAP, why);
    if (code == "R-102CD" || code == "399067008" || code == "R-10232" || code == "399198007" || code == "R-10236" ||
        code == "399173006") {
      return decide(ViewPosition::kLateral, why);
    }
    const std::string m = absl::AsciiStrToLower(meaning);
    if (m.find("oblique") != std::string::npos || m.find("decubitus") != std::string::npos) continue;
    if (m.find("postero-anterior") != std::string::npos || m.find("posteroanterior") != std::string::npos) {
      return decide(ViewPosition::kPA, why);
    }
    if (m.find("antero-posterior") != std::string::npos || m.find("anteroposterior") != std::string::npos) {
      return decide(ViewPosition::kAP, why);
    }
    if (m.find("lateral") != std::string::npos) return decide(ViewPosition::kLateral, why);
  }
  // 3. PatientOrientation (row direction)
  bool frontal = false;
  std::string orientation_why;
  if (!a.patient_orientation.empty() && !a.patient_orientation[0].empty()) {
    const char row = static_cast<char>(std::toupper(static_cast<unsigned char>(a.patient_orientation[0][0])));
    orientation_why = "PatientOrientation=" + absl::StrJoin(a.patient_orientation, "\\");
    if (row == 'A' || row == 'P') return decide(ViewPosition::kLateral, orientation_why);
    frontal = row == 'L' || row == 'R';
  }
  // 4. Text
  const std::pair<const char*, const std::string*> texts[] = {{"SeriesDescription", &a.series_description},
                                                              {"ProtocolName", &a.protocol_name}};
  for (const auto& [name, text] : texts) {
    std::string word;
    const TextView v = view_from_words(*text, &word);
    const std::string why = absl::StrCat(name, " says ", word);
    if (v == TextView::kPA) return decide(ViewPosition::kPA, frontal ? orientation_why + ", " + why : why);
    if (v == TextView::kAP) return decide(ViewPosition::kAP, frontal ? orientation_why + ", " + why : why);
    if (v == TextView::kLateral && !frontal) return decide(ViewPosition::kLateral, why);
  }
  if (frontal) return decide(ViewPosition::kPA, orientation_why + " (frontal; AP/PA not stated, PA assumed)");
  // 5. Nothing decided
  return decide(ViewPosition::kOther, "no view attribute decided (ViewPosition, ViewCodeSequence, "
                                      "PatientOrientation, SeriesDescription, ProtocolName)");
}

}  // namespace internal

const char* view_name(ViewPosition v) {
  switch (v) {
    case ViewPosition::kPA:
      return "PA";
    case ViewPosition::kAP:
      return "AP";
    case ViewPosition::kLateral:
      return "LATERAL";
    case ViewPosition::kOther:
      break;
  }
  return "OTHER";
}

}  // namespace cmn::preprocessing
