#pragma once
// Small helpers shared by the command-line tools.
#include <string>

namespace cmn {

// A tool's error is one stderr line; status messages may span lines (e.g. load_state_dict's key lists).
inline std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

}  // namespace cmn
