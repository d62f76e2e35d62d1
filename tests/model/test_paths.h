#pragma once
// Paths of the read-only fixtures beside the checkout (../shared), as CI lays them out.
#include <string>

namespace cmn::testing {

inline std::string shared_path(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/" + relative; }
inline std::string parity_path(const std::string& relative) { return shared_path("parity/" + relative); }

}  // namespace cmn::testing
