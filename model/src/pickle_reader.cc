// The unpickler: decodes the opcodes torch.save emits into pickle::Value trees, with bounds-checked reads and
// errors that name the opcode and byte offset.
#include "pickle.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "pickle_opcodes.h"

namespace cmn::model::pickle {

namespace {

std::string opcode_name(uint8_t code) {
  char buf[32];
  if (code >= 0x20 && code < 0x7f) {
    std::snprintf(buf, sizeof buf, "0x%02x ('%c')", code, code);
  } else {
    std::snprintf(buf, sizeof buf, "0x%02x", code);
  }
  return buf;
}

// Bounds-checked little-endian reads over the pickle bytes. Every read names the opcode being decoded so a
// truncated file gives "truncated pickle: BINUNICODE at offset 123 needs 40 bytes, 7 left".
class Cursor {
 public:
  Cursor(const char* data, size_t size) : data_(data), size_(size) {}

  bool at_end() const { return pos_ >= size_; }
  size_t pos() const { return pos_; }
  void begin_op(uint8_t code) {
    op_ = code;
    op_pos_ = pos_ - 1;
  }
  std::string where() const { return opcode_name(op_) + " at offset " + std::to_string(op_pos_); }

  uint8_t next_byte() { return static_cast<uint8_t>(take(1)[0]); }

  const char* take(uint64_t n) {
    TORCH_CHECK(n <= size_ - pos_, "truncated pickle: ", where(), " needs ", n, " bytes, ", size_ - pos_, " left");
    const char* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }

  uint64_t le(size_t n) {
    const auto* p = reinterpret_cast<const uint8_t*>(take(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }

  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    TORCH_CHECK(nl != nullptr, "truncated pickle: ", where(), " has no end of line");
    size_t n = static_cast<const char*>(nl) - (data_ + pos_);
    std::string s(data_ + pos_, n);
    pos_ += n + 1;
    return s;
  }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  uint8_t op_ = 0;
  size_t op_pos_ = 0;
};

// Lists and dicts made while unpickling. APPEND / SETITEM through the memo can make a container hold itself
// (directly or through others); shared_ptr never frees such a cycle. Every cycle passes through a list or
// dict filled after it was made, so emptying those breaks them all: done when unpickling fails, and when the
// finished object has a cycle (torch.save never writes one; it is refused).
class Containers {
 public:
  ~Containers() {
    if (keep_) return;
    for (const ValuePtr& c : made_) {
      c->items.clear();
      c->entries.clear();
      c->string_index.clear();
    }
  }
  const ValuePtr& track(const ValuePtr& v) {
    made_.push_back(v);
    return v;
  }
  void keep() { keep_ = true; }

  // Depth-first search with colours, iterative (the nesting may be millions of levels deep).
  bool has_cycle() const {
    enum : uint8_t { kOpen = 1, kDone = 2 };
    std::unordered_map<const Value*, uint8_t> colour;
    struct Frame {
      const Value* v;
      size_t next;
    };
    auto child = [](const Value& v, size_t i) -> const Value* {
      if (i < v.items.size()) return v.items[i].get();
      i -= v.items.size();
      if (i / 2 >= v.entries.size()) return nullptr;
      const auto& e = v.entries[i / 2];
      return (i % 2 ? e.second : e.first).get();
    };
    std::vector<Frame> stack;
    for (const ValuePtr& start : made_) {
      if (colour[start.get()] != 0) continue;
      colour[start.get()] = kOpen;
      stack.push_back({start.get(), 0});
      while (!stack.empty()) {
        Frame& f = stack.back();
        const Value* c = child(*f.v, f.next);
        if (c == nullptr) {
          colour[f.v] = kDone;
          stack.pop_back();
          continue;
        }
        ++f.next;
        if (c->items.empty() && c->entries.empty()) continue;
        uint8_t& col = colour[c];
        if (col == kOpen) return true;
        if (col == 0) {
          col = kOpen;
          stack.push_back({c, 0});
        }
      }
    }
    return false;
  }

 private:
  std::vector<ValuePtr> made_;
  bool keep_ = false;
};

}  // namespace

static ValuePtr make_bytes(std::string s) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::bytes;
  v->text = std::move(s);
  return v;
}

static ValuePtr make_list() {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::list;
  return v;
}

ValuePtr unpickle(const char* data, size_t size, const UnpicklerHooks& hooks) {
  TORCH_CHECK(hooks.persistent_load, "unpickle: no persistent_load hook");
  Cursor in(data, size);
  std::vector<ValuePtr> stack;
  std::vector<size_t> marks;  // stack heights at each MARK (CPython's metastack)
  std::unordered_map<uint64_t, ValuePtr> memo;
  Containers containers;  // declared after the stack and memo: it empties the containers before they go

  // Pops respect the innermost mark, as CPython does, so a malformed pickle cannot eat into an outer frame.
  auto floor = [&]() -> size_t { return marks.empty() ? 0 : marks.back(); };
  auto pop = [&]() -> ValuePtr {
    TORCH_CHECK(stack.size() > floor(), "malformed pickle: stack underflow at ", in.where());
    ValuePtr v = std::move(stack.back());
    stack.pop_back();
    return v;
  };
  auto top = [&]() -> ValuePtr& {
    TORCH_CHECK(stack.size() > floor(), "malformed pickle: stack underflow at ", in.where());
    return stack.back();
  };
  auto pop_mark = [&]() -> std::vector<ValuePtr> {
    TORCH_CHECK(!marks.empty(), "malformed pickle: no MARK for ", in.where());
    size_t m = marks.back();
    marks.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack.begin() + static_cast<std::ptrdiff_t>(m)),
                                std::make_move_iterator(stack.end()));
    stack.resize(m);
    return items;
  };
  auto memo_get = [&](uint64_t idx) {
    auto it = memo.find(idx);
    TORCH_CHECK(it != memo.end(), "malformed pickle: memo key ", idx, " not found at ", in.where());
    stack.push_back(it->second);
  };
  auto memo_put = [&](uint64_t idx) { memo[idx] = top(); };
  auto set_items = [&](Value& target, std::vector<ValuePtr>& kv) {
    TORCH_CHECK(kv.size() % 2 == 0, "malformed pickle: odd number of items for ", in.where());
    // Objects we keep opaque (e.g. a defaultdict in optimizer state) may receive items; they are dropped.
    if (target.kind == Value::Kind::object) return;
    TORCH_CHECK(target.kind == Value::Kind::dict, "malformed pickle: ", in.where(), " on ", describe(target));
    for (size_t i = 0; i < kv.size(); i += 2) target.dict_set(std::move(kv[i]), std::move(kv[i + 1]));
  };
  auto append_items = [&](Value& target, std::vector<ValuePtr>& items) {
    if (target.kind == Value::Kind::object) return;
    TORCH_CHECK(target.kind == Value::Kind::list, "malformed pickle: ", in.where(), " on ", describe(target));
    for (auto& item : items) target.items.push_back(std::move(item));
  };
  // REDUCE and NEWOBJ: the hook knows torch's rebuild functions; OrderedDict() is the one generic constructor
  // that matters (every state_dict is one); everything else becomes an opaque object.
  auto construct = [&](const ValuePtr& callable, const ValuePtr& args, bool use_hook) -> ValuePtr {
    TORCH_CHECK(args->kind == Value::Kind::tuple, "malformed pickle: ", in.where(), " arguments are ",
                describe(*args), ", not a tuple");
    if (callable->kind == Value::Kind::global) {
      if (use_hook && hooks.reduce) {
        if (ValuePtr built = hooks.reduce(*callable, args)) return built;
      }
      if (callable->is_global("collections", "OrderedDict") && args->items.empty()) {
        return containers.track(make_dict(true));
      }
    }
    return make_object(*callable);
  };

  while (!in.at_end()) {
    const uint8_t code = in.next_byte();
    in.begin_op(code);
    switch (code) {
      case PROTO: {
        const uint8_t proto = in.next_byte();
        TORCH_CHECK(proto <= 5, "unsupported pickle protocol ", int(proto), " at ", in.where());
        break;
      }
      case FRAME:
        in.le(8);  // frame length: we read the whole buffer anyway
        break;
      case STOP: {
        ValuePtr result = pop();
        TORCH_CHECK(!containers.has_cycle(), "unsupported pickle: a list or dict contains itself (at ", in.where(), ")");
        containers.keep();
        return result;
      }
      case MARK: marks.push_back(stack.size()); break;
      case NONE: stack.push_back(make_none()); break;
      case NEWTRUE: stack.push_back(make_bool(true)); break;
      case NEWFALSE: stack.push_back(make_bool(false)); break;
      case BININT: stack.push_back(make_int(static_cast<int32_t>(static_cast<uint32_t>(in.le(4))))); break;
      case BININT1: stack.push_back(make_int(static_cast<int64_t>(in.le(1)))); break;
      case BININT2: stack.push_back(make_int(static_cast<int64_t>(in.le(2)))); break;
      case LONG1: {
        const uint8_t n = in.next_byte();
        TORCH_CHECK(n <= 8, "unsupported pickle integer of ", int(n), " bytes at ", in.where());
        uint64_t v = n == 0 ? 0 : in.le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        stack.push_back(make_int(static_cast<int64_t>(v)));
        break;
      }
      case BINFLOAT: {
        const auto* p = reinterpret_cast<const uint8_t*>(in.take(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big endian, unlike everything else
        double d;
        std::memcpy(&d, &bits, sizeof d);
        stack.push_back(make_float(d));
        break;
      }
      case BINUNICODE:
      case BINSTRING: {
        const uint64_t n = in.le(4);
        if (code == BINSTRING) {
          TORCH_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max()),
                      "malformed pickle: negative length at ", in.where());
        }
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case SHORT_BINUNICODE:
      case SHORT_BINSTRING: {
        const uint64_t n = in.next_byte();
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case BINUNICODE8: {
        const uint64_t n = in.le(8);
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case BINBYTES:
      case SHORT_BINBYTES: {
        const uint64_t n = code == BINBYTES ? in.le(4) : in.next_byte();
        const char* p = in.take(n);
        stack.push_back(make_bytes(std::string(p, n)));
        break;
      }
      case EMPTY_TUPLE: stack.push_back(make_tuple({})); break;
      case TUPLE1: {
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a)}));
        break;
      }
      case TUPLE2: {
        ValuePtr b = pop();
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a), std::move(b)}));
        break;
      }
      case TUPLE3: {
        ValuePtr c = pop();
        ValuePtr b = pop();
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a), std::move(b), std::move(c)}));
        break;
      }
      case TUPLE: stack.push_back(make_tuple(pop_mark())); break;
      case EMPTY_LIST: stack.push_back(containers.track(make_list())); break;
      case LIST: {
        ValuePtr list = containers.track(make_list());
        list->items = pop_mark();
        stack.push_back(std::move(list));
        break;
      }
      case EMPTY_DICT: stack.push_back(containers.track(make_dict(false))); break;
      case DICT: {
        std::vector<ValuePtr> kv = pop_mark();
        ValuePtr dict = containers.track(make_dict(false));
        set_items(*dict, kv);
        stack.push_back(std::move(dict));
        break;
      }
      case APPEND: {
        std::vector<ValuePtr> one{pop()};
        append_items(*top(), one);
        break;
      }
      case APPENDS: {
        std::vector<ValuePtr> items = pop_mark();
        append_items(*top(), items);
        break;
      }
      case SETITEM: {
        ValuePtr value = pop();
        ValuePtr key = pop();
        std::vector<ValuePtr> kv{std::move(key), std::move(value)};
        set_items(*top(), kv);
        break;
      }
      case SETITEMS: {
        std::vector<ValuePtr> kv = pop_mark();
        set_items(*top(), kv);
        break;
      }
      case GLOBAL: {
        std::string module = in.line();
        std::string name = in.line();
        stack.push_back(make_global(std::move(module), std::move(name)));
        break;
      }
      case STACK_GLOBAL: {
        ValuePtr name = pop();
        ValuePtr module = pop();
        TORCH_CHECK(module->kind == Value::Kind::string && name->kind == Value::Kind::string,
                    "malformed pickle: ", in.where(), " needs two strings");
        stack.push_back(make_global(module->text, name->text));
        break;
      }
      case BINPUT: memo_put(in.le(1)); break;
      case LONG_BINPUT: memo_put(in.le(4)); break;
      case MEMOIZE: memo_put(memo.size()); break;
      case BINGET: memo_get(in.le(1)); break;
      case LONG_BINGET: memo_get(in.le(4)); break;
      case REDUCE: {
        ValuePtr args = pop();
        ValuePtr callable = pop();
        stack.push_back(construct(callable, args, /*use_hook=*/true));
        break;
      }
      case NEWOBJ: {
        ValuePtr args = pop();
        ValuePtr cls = pop();
        stack.push_back(construct(cls, args, /*use_hook=*/false));
        break;
      }
      case BUILD:
        // State for an object: {'_metadata': ...} on a state_dict OrderedDict, or the __dict__ of an object we
        // keep opaque. Neither matters for reading weights.
        pop();
        top();
        break;
      case BINPERSID: {
        ValuePtr pid = pop();
        ValuePtr obj = hooks.persistent_load(pid);
        TORCH_CHECK(obj != nullptr, "persistent_load returned nothing at ", in.where());
        stack.push_back(std::move(obj));
        break;
      }
      default:
        TORCH_CHECK(false, "unsupported pickle opcode ", opcode_name(code), " at offset ", in.pos() - 1);
    }
  }
  TORCH_CHECK(false, "truncated pickle: no STOP opcode in ", size, " bytes");
}

}  // namespace cmn::model::pickle
