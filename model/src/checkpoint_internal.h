#pragma once
// What checkpoint.cc, checkpoint_read.cc and checkpoint_write.cc share: the storage classes torch.save names,
// the host byte order check and shapes for error messages. Private to cmn_model.
#include <cstdint>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>

#include <torch/torch.h>

namespace cmn::model::checkpoint_detail {

struct StorageType {
  const char* name;  // torch.<name>
  c10::ScalarType dtype;
};

// The storage classes torch.save names in persistent ids (the legacy typed-storage names, which PyTorch 2.x
// still writes for compatibility).
inline constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", c10::ScalarType::Float},
    {"HalfStorage", c10::ScalarType::Half},
    {"BFloat16Storage", c10::ScalarType::BFloat16},
    {"DoubleStorage", c10::ScalarType::Double},
    {"LongStorage", c10::ScalarType::Long},
    {"IntStorage", c10::ScalarType::Int},
    {"ShortStorage", c10::ScalarType::Short},
    {"CharStorage", c10::ScalarType::Char},
    {"ByteStorage", c10::ScalarType::Byte},
    {"BoolStorage", c10::ScalarType::Bool},
    {"ComplexFloatStorage", c10::ScalarType::ComplexFloat},
    {"ComplexDoubleStorage", c10::ScalarType::ComplexDouble},
};

inline std::optional<c10::ScalarType> storage_dtype(const std::string& name) {
  for (const auto& t : kStorageTypes) {
    if (name == t.name) return t.dtype;
  }
  return std::nullopt;
}

inline const char* storage_name(c10::ScalarType dtype) {
  for (const auto& t : kStorageTypes) {
    if (t.dtype == dtype) return t.name;
  }
  return nullptr;
}

inline bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

inline std::string shape_string(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}

}  // namespace cmn::model::checkpoint_detail
