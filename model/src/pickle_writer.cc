// pickle::Writer: emits protocol 2 the way CPython's pickler does for what torch.save writes.
#include "pickle.h"

#include <cstring>
#include <limits>

#include "pickle_opcodes.h"

namespace cmn::model::pickle {

Writer::Writer() {
  op(PROTO);
  op(2);
}

void Writer::none() { op(NONE); }
void Writer::boolean(bool b) { op(b ? NEWTRUE : NEWFALSE); }

void Writer::integer(int64_t i) {
  if (i >= 0 && i <= 0xff) {
    op(BININT1);
    op(static_cast<uint8_t>(i));
  } else if (i >= 0 && i <= 0xffff) {
    op(BININT2);
    op(static_cast<uint8_t>(i & 0xff));
    op(static_cast<uint8_t>(i >> 8));
  } else if (i >= std::numeric_limits<int32_t>::min() && i <= std::numeric_limits<int32_t>::max()) {
    op(BININT);
    const auto u = static_cast<uint32_t>(static_cast<int32_t>(i));
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(u >> (8 * k)));
  } else {
    // LONG1 with the shortest two's complement little-endian encoding, as CPython's encode_long.
    const auto u = static_cast<uint64_t>(i);
    uint8_t bytes[8];
    for (int k = 0; k < 8; ++k) bytes[k] = static_cast<uint8_t>(u >> (8 * k));
    int n = 8;
    while (n > 1 && ((bytes[n - 1] == 0x00 && !(bytes[n - 2] & 0x80)) || (bytes[n - 1] == 0xff && (bytes[n - 2] & 0x80)))) {
      --n;
    }
    op(LONG1);
    op(static_cast<uint8_t>(n));
    raw(bytes, static_cast<size_t>(n));
  }
}

void Writer::floating(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  op(BINFLOAT);
  for (int k = 7; k >= 0; --k) op(static_cast<uint8_t>(bits >> (8 * k)));
}

void Writer::string(const std::string& s) {
  TORCH_CHECK(s.size() <= std::numeric_limits<uint32_t>::max(), "pickle: string too long");
  op(BINUNICODE);
  const auto n = static_cast<uint32_t>(s.size());
  for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(n >> (8 * k)));
  raw(s.data(), s.size());
}

void Writer::global(const std::string& module, const std::string& name) {
  op(GLOBAL);
  out_ += module;
  out_ += '\n';
  out_ += name;
  out_ += '\n';
}

void Writer::mark() { op(MARK); }
void Writer::tuple_from_mark() { op(TUPLE); }
void Writer::empty_tuple() { op(EMPTY_TUPLE); }

void Writer::int_tuple(const std::vector<int64_t>& values) {
  if (values.empty()) {
    op(EMPTY_TUPLE);
    return;
  }
  const bool short_form = values.size() <= 3;
  if (!short_form) op(MARK);
  for (int64_t v : values) integer(v);
  if (short_form) {
    op(static_cast<uint8_t>(TUPLE1 + values.size() - 1));
  } else {
    op(TUPLE);
  }
}

void Writer::empty_dict() { op(EMPTY_DICT); }
void Writer::setitem() { op(SETITEM); }
void Writer::setitems() { op(SETITEMS); }
void Writer::reduce() { op(REDUCE); }
void Writer::build() { op(BUILD); }
void Writer::binpersid() { op(BINPERSID); }
void Writer::stop() { op(STOP); }

void Writer::ordered_dict() {
  global("collections", "OrderedDict");
  op(EMPTY_TUPLE);
  op(REDUCE);
}

}  // namespace cmn::model::pickle
