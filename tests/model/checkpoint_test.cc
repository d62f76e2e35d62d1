// Tests for cmn::model checkpoint I/O (read_checkpoint / write_checkpoint / load_state_dict).
//
// The expected numbers for the parity checkpoint (/work/shared/parity/dev/model.pth, written by PyTorch's
// torch.save) were computed without torch: Python's zipfile + pickle (with stub classes for the torch
// globals) + struct's 'e' (float16) / 'q' (int64) decoding of the raw `model/data/<key>` records.
// Hand-made pickles below are encoded byte by byte here, independently of the implementation's writer, so
// they also exercise the opcodes torch.save (protocol 2) never emits.
#include "cmn/model/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/c10_error.h"

namespace cmn::model {
namespace {

namespace fs = std::filesystem;

const std::string kParityModel = std::string(CMN_SHARED_DIR) + "/parity/dev/model.pth";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

using cmn::testing::error_of;

// A zip in torch.save's layout, with whatever data.pkl and records the test wants. The folder name inside
// the zip is the file's stem (PyTorchStreamWriter's rule).
void write_archive(const std::string& path, const std::string& data_pkl,
                   const std::map<std::string, std::string>& records) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", data_pkl.data(), data_pkl.size());
  for (const auto& [name, bytes] : records) writer.writeRecord(name, bytes.data(), bytes.size());
  writer.writeEndOfFile();
}

template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// A hand encoder for pickle bytes (opcode values from CPython's Lib/pickle.py).
struct Pickle {
  std::string s;
  Pickle& op(uint8_t c) {
    s.push_back(static_cast<char>(c));
    return *this;
  }
  Pickle& u(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  Pickle& proto(int p) { return op(0x80).op(static_cast<uint8_t>(p)); }
  Pickle& str(const std::string& x) {  // BINUNICODE
    op('X').u(x.size(), 4);
    s += x;
    return *this;
  }
  Pickle& short_str(const std::string& x) {  // SHORT_BINUNICODE
    op(0x8c).u(x.size(), 1);
    s += x;
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    op('c');
    s += module + "\n" + name + "\n";
    return *this;
  }
  Pickle& int1(int v) { return op('K').u(static_cast<uint64_t>(v), 1); }
  Pickle& mark() { return op('('); }
  Pickle& tuple() { return op('t'); }
  Pickle& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  // _rebuild_tensor_v2 over storage `key` of type torch.<type>, numel elements; 1-D or 2-D shapes given as
  // (size, stride) lists of small ints.
  Pickle& tensor(const std::string& type, const std::string& key, int numel, int offset, const std::vector<int>& size,
                 const std::vector<int>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    mark().str("storage").global("torch", type).str(key).str("cpu").int1(numel).tuple().op('Q');
    int1(offset);
    mark();
    for (int v : size) int1(v);
    tuple();
    mark();
    for (int v : stride) int1(v);
    tuple();
    op(0x89);  // requires_grad False
    ordered_dict();
    return tuple().op('R');
  }
};

// {'w': <one tensor>} as a bare state_dict (a plain dict with a single SETITEM).
std::string single_tensor_pickle(const std::string& type, int numel, int offset, const std::vector<int>& size,
                                 const std::vector<int>& stride) {
  Pickle p;
  p.proto(2).op('}').str("w").tensor(type, "0", numel, offset, size, stride).op('s').op('.');
  return p.s;
}

struct Small : torch::nn::Module {
  Small() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    bn = register_module("bn", torch::nn::BatchNorm1d(3));
    table = register_buffer("table", torch::arange(6, torch::kFloat).reshape({2, 3}));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::Tensor table;
};

// One Linear registered under two names (as R2GenCMN shares layers): both names are in the state_dict.
struct Twice : torch::nn::Module {
  Twice() {
    torch::nn::Linear shared(2, 2);
    a = register_module("a", shared);
    b = register_module("b", shared);
  }
  torch::nn::Linear a{nullptr};
  torch::nn::Linear b{nullptr};
};

std::vector<std::string> keys_of(const StateDict& sd) {
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd) keys.push_back(k);
  return keys;
}

const torch::Tensor& find(const StateDict& sd, const std::string& key) {
  for (const auto& [k, t] : sd) {
    if (k == key) return t;
  }
  static const torch::Tensor none;
  ADD_FAILURE() << "no key " << key;
  return none;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("cmn_checkpoint_" + std::to_string(::getpid()) + "_" + std::string(info->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------------------
// The parity checkpoint written by PyTorch.

class CheckpointParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fs::exists(kParityModel)) info_ = new CheckpointInfo(read_checkpoint(kParityModel));
  }
  static void TearDownTestSuite() {
    delete info_;
    info_ = nullptr;
  }
  void SetUp() override {
    if (info_ == nullptr) GTEST_SKIP() << kParityModel << " not present";
  }
  static const CheckpointInfo& info() { return *info_; }
  static CheckpointInfo* info_;
};
CheckpointInfo* CheckpointParityTest::info_ = nullptr;

TEST_F(CheckpointParityTest, TopLevel) {
  EXPECT_EQ(info().epoch, 1);
  EXPECT_EQ(info().top_level_keys, (std::vector<std::string>{"epoch", "state_dict", "optimizer", "monitor_best"}));
  ASSERT_EQ(info().state_dict.size(), 778u);
  EXPECT_EQ(info().state_dict.front().first, "visual_extractor.model.0.weight");
  EXPECT_EQ(info().state_dict[1].first, "visual_extractor.model.1.weight");
  EXPECT_EQ(info().state_dict[776].first, "encoder_decoder.logit.weight");
  EXPECT_EQ(info().state_dict.back().first, "encoder_decoder.logit.bias");
}

TEST_F(CheckpointParityTest, ShapesAndDtypes) {
  const StateDict& sd = info().state_dict;
  EXPECT_EQ(find(sd, "visual_extractor.model.0.weight").sizes(), (std::vector<int64_t>{64, 3, 7, 7}));
  EXPECT_EQ(find(sd, "visual_extractor.model.0.weight").scalar_type(), torch::kHalf);
  EXPECT_EQ(find(sd, "encoder_decoder.logit.weight").sizes(), (std::vector<int64_t>{761, 512}));
  EXPECT_EQ(find(sd, "encoder_decoder.model.src_embed.0.pe").sizes(), (std::vector<int64_t>{1, 5000, 512}));

  int64_t half_numel = 0;
  int64_t long_numel = 0;
  int64_t long_count = 0;
  for (const auto& [key, t] : sd) {
    EXPECT_TRUE(t.device().is_cpu()) << key;
    EXPECT_TRUE(t.is_contiguous()) << key;
    if (t.scalar_type() == torch::kHalf) {
      half_numel += t.numel();
    } else {
      ASSERT_EQ(t.scalar_type(), torch::kLong) << key;
      // The only int64 entries are BatchNorm counters: 0-dim scalars, 1 after the single training epoch.
      EXPECT_NE(key.find("num_batches_tracked"), std::string::npos) << key;
      EXPECT_EQ(t.dim(), 0) << key;
      EXPECT_EQ(t.item<int64_t>(), 1) << key;
      long_numel += t.numel();
      ++long_count;
    }
  }
  EXPECT_EQ(half_numel, 65329337);
  EXPECT_EQ(long_numel, 104);
  EXPECT_EQ(long_count, 104);
}

TEST_F(CheckpointParityTest, ExactValues) {
  const StateDict& sd = info().state_dict;
  const torch::Tensor conv = find(sd, "visual_extractor.model.0.weight").to(torch::kFloat);
  EXPECT_EQ(conv[0][0][0][0].item<float>(), -0.0287322998046875f);
  EXPECT_EQ(conv[0][0][0][1].item<float>(), -0.008209228515625f);
  EXPECT_EQ(conv[0][0][0][3].item<float>(), -0.009368896484375f);
  EXPECT_EQ(conv[63][2][6][6].item<float>(), 0.047027587890625f);
  EXPECT_NEAR(conv.to(torch::kDouble).sum().item<double>(), 2.5182573199272156, 1e-9);

  const torch::Tensor bn = find(sd, "visual_extractor.model.1.weight").to(torch::kDouble);
  EXPECT_EQ(bn[0].item<double>(), 0.54296875);
  EXPECT_EQ(bn[63].item<double>(), 0.93505859375);
  EXPECT_NEAR(bn.sum().item<double>(), 59.7646484375, 1e-9);

  const torch::Tensor pe = find(sd, "encoder_decoder.model.src_embed.0.pe").to(torch::kDouble);
  EXPECT_EQ(pe[0][0][0].item<double>(), 0.0);
  EXPECT_EQ(pe[0][0][1].item<double>(), 1.0);
  EXPECT_EQ(pe[0][1][0].item<double>(), 0.84130859375);
  EXPECT_EQ(pe[0][1][1].item<double>(), 0.54052734375);
  EXPECT_EQ(pe[0][4999][510].item<double>(), 0.495361328125);
  EXPECT_EQ(pe[0][4999][511].item<double>(), 0.86865234375);
  EXPECT_NEAR(pe.sum().item<double>(), 338868.4163595438, 1e-6);

  const torch::Tensor logit = find(sd, "encoder_decoder.logit.weight").to(torch::kDouble);
  EXPECT_EQ(logit[0][0].item<double>(), 0.040130615234375);
  EXPECT_EQ(logit[0][1].item<double>(), 0.0237579345703125);
  EXPECT_EQ(logit[760][511].item<double>(), 0.015655517578125);
  EXPECT_NEAR(logit.sum().item<double>(), -81.52653127908707, 1e-7);

  const torch::Tensor bias = find(sd, "encoder_decoder.logit.bias").to(torch::kDouble);
  EXPECT_EQ(bias[0].item<double>(), -0.034454345703125);
  EXPECT_EQ(bias[760].item<double>(), -0.0654296875);
  EXPECT_NEAR(bias.sum().item<double>(), -10.71792483329773, 1e-9);
}

TEST_F(CheckpointParityTest, WholeFileChecksum) {
  // Sum of |x| over every float16 element of all 674 half tensors: catches a wrong record, offset or dtype
  // anywhere in the file.
  double total = 0.0;
  for (const auto& [key, t] : info().state_dict) {
    if (t.scalar_type() == torch::kHalf) total += t.to(torch::kDouble).abs().sum().item<double>();
  }
  EXPECT_NEAR(total, 5774490.284296989, 1e-3);
}

TEST_F(CheckpointParityTest, RewriteIsIdentical) {
  // Writing what we read and reading it back is lossless, for the real 778-entry state_dict.
  const fs::path dir = fs::path(::testing::TempDir()) / ("cmn_checkpoint_rewrite_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / "model.pth").string();
  CheckpointWriteOptions options;
  options.epoch = info().epoch;
  options.archive_name = "model";
  write_checkpoint(out, info().state_dict, options);
  const CheckpointInfo back = read_checkpoint(out);
  fs::remove_all(dir);
  EXPECT_EQ(back.epoch, 1);
  ASSERT_EQ(keys_of(back.state_dict), keys_of(info().state_dict));
  for (size_t i = 0; i < back.state_dict.size(); ++i) {
    const torch::Tensor& a = info().state_dict[i].second;
    const torch::Tensor& b = back.state_dict[i].second;
    ASSERT_EQ(a.scalar_type(), b.scalar_type()) << back.state_dict[i].first;
    ASSERT_TRUE(torch::equal(a, b)) << back.state_dict[i].first;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Round trips.

StateDict all_dtypes_state() {
  StateDict sd;
  sd.emplace_back("f32", torch::tensor({1.5f, -2.25f, 3.0f}));
  sd.emplace_back("f16", torch::tensor({0.5, -1.0, 65504.0}).to(torch::kHalf));
  sd.emplace_back("bf16", torch::tensor({0.5, -3.0}).to(torch::kBFloat16));
  sd.emplace_back("f64", torch::tensor({1e300, -1e-300}, torch::kDouble));
  sd.emplace_back("i64", torch::tensor({int64_t{1} << 40, int64_t{-7}}));
  sd.emplace_back("i32", torch::tensor({123456, -1}, torch::kInt));
  sd.emplace_back("i16", torch::tensor({-300, 300}, torch::kShort));
  sd.emplace_back("i8", torch::tensor({-128, 127}, torch::kChar));
  sd.emplace_back("u8", torch::tensor({0, 255}, torch::kByte));
  sd.emplace_back("bool", torch::tensor({true, false, true}));
  sd.emplace_back("scalar", torch::tensor(int64_t{42}));
  sd.emplace_back("empty", torch::empty({0, 5}));
  sd.emplace_back("big", torch::arange(70000, torch::kInt));                      // sizes need BININT
  sd.emplace_back("transposed", torch::arange(12, torch::kFloat).reshape({3, 4}).t());  // non-contiguous
  sd.emplace_back("rank5", torch::arange(32, torch::kDouble).reshape({2, 2, 2, 2, 2}));  // MARK ... TUPLE
  return sd;
}

void expect_same(const StateDict& expected, const StateDict& actual) {
  ASSERT_EQ(keys_of(actual), keys_of(expected));
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& [key, e] = expected[i];
    const torch::Tensor& a = actual[i].second;
    EXPECT_EQ(a.scalar_type(), e.scalar_type()) << key;
    EXPECT_EQ(a.sizes(), e.sizes()) << key;
    EXPECT_TRUE(a.device().is_cpu()) << key;
    EXPECT_TRUE(torch::equal(a, e)) << key;
  }
}

TEST_F(CheckpointTest, RoundTripOrderedDictHalfCudaWrapper) {
  torch::manual_seed(0);
  Small m;
  StateDict sd = module_state_dict(m);
  for (auto& [key, t] : sd) {
    if (t.is_floating_point()) t = t.to(torch::kHalf);
  }
  CheckpointWriteOptions options;
  options.ordered_dict = true;
  options.r2gencmn_wrapper = true;
  options.epoch = 7;
  options.monitor_best = 0.25;
  options.location = "cuda:0";
  write_checkpoint(path("small.pth"), sd, options);

  const CheckpointInfo info = read_checkpoint(path("small.pth"));
  EXPECT_EQ(info.epoch, 7);
  EXPECT_EQ(info.top_level_keys, (std::vector<std::string>{"epoch", "state_dict", "optimizer", "monitor_best"}));
  expect_same(sd, info.state_dict);
  EXPECT_EQ(find(info.state_dict, "fc.weight").scalar_type(), torch::kHalf);
  EXPECT_EQ(find(info.state_dict, "bn.num_batches_tracked").scalar_type(), torch::kLong);
}

TEST_F(CheckpointTest, RoundTripAllDtypesOrderedDict) {
  const StateDict sd = all_dtypes_state();
  CheckpointWriteOptions options;
  options.epoch = int64_t{5} << 33;  // needs LONG1
  write_checkpoint(path("all.pth"), sd, options);
  const CheckpointInfo info = read_checkpoint(path("all.pth"));
  EXPECT_EQ(info.epoch, int64_t{5} << 33);
  expect_same(sd, info.state_dict);
}

TEST_F(CheckpointTest, RoundTripPlainDictWrapper) {
  const StateDict sd = all_dtypes_state();
  CheckpointWriteOptions options;
  options.ordered_dict = false;
  options.epoch = -3;
  write_checkpoint(path("plain.pth"), sd, options);
  const CheckpointInfo info = read_checkpoint(path("plain.pth"));
  EXPECT_EQ(info.epoch, -3);
  EXPECT_EQ(info.top_level_keys.size(), 4u);
  expect_same(sd, info.state_dict);
}

TEST_F(CheckpointTest, RoundTripBareStateDict) {
  const StateDict sd = all_dtypes_state();
  for (bool ordered : {true, false}) {
    CheckpointWriteOptions options;
    options.ordered_dict = ordered;
    options.r2gencmn_wrapper = false;
    write_checkpoint(path("bare.pth"), sd, options);
    const CheckpointInfo info = read_checkpoint(path("bare.pth"));
    EXPECT_EQ(info.epoch, -1) << ordered;
    EXPECT_TRUE(info.top_level_keys.empty()) << ordered;
    expect_same(sd, info.state_dict);
  }
}

TEST_F(CheckpointTest, RoundTripEmptyAndSingleEntry) {
  // 0 and 1 entries use no SETITEMS / SETITEM instead of MARK ... SETITEMS.
  for (size_t n : {size_t{0}, size_t{1}}) {
    StateDict sd;
    if (n == 1) sd.emplace_back("only", torch::ones({2}));
    write_checkpoint(path("n.pth"), sd, {});
    expect_same(sd, read_checkpoint(path("n.pth")).state_dict);
  }
}

TEST_F(CheckpointTest, RoundTripManyEntriesBatched) {
  // More than 1000 entries: SETITEMS comes in batches of 1000, as CPython writes it.
  StateDict sd;
  for (int i = 0; i < 2501; ++i) sd.emplace_back("k" + std::to_string(i), torch::full({1}, i, torch::kInt));
  write_checkpoint(path("many.pth"), sd, {});
  expect_same(sd, read_checkpoint(path("many.pth")).state_dict);
}

TEST_F(CheckpointTest, ArchiveLayoutAndAtomicWrite) {
  StateDict sd{{"w", torch::ones({3})}};
  CheckpointWriteOptions options;
  options.archive_name = "my.model";
  const std::string target = path("out.pth");
  write_bytes(target, "old contents");
  write_checkpoint(target, sd, options);

  // Only the target is left in the folder (the temporary file was renamed over it).
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"out.pth"});

  // Zip member names are stored in clear in the local headers.
  const std::string bytes = read_bytes(target);
  EXPECT_NE(bytes.find("my.model/data.pkl"), std::string::npos);
  EXPECT_NE(bytes.find("my.model/data/0"), std::string::npos);
  EXPECT_NE(bytes.find("my.model/version"), std::string::npos);
  caffe2::serialize::PyTorchStreamReader reader(target);
  auto [version, n] = reader.getRecord("version");
  EXPECT_EQ(std::string(static_cast<const char*>(version.get()), n), "3\n");
  // The pickle is protocol 2 and its state_dict an OrderedDict, as torch.save writes it.
  auto [pkl, pkl_size] = reader.getRecord("data.pkl");
  const std::string pickle(static_cast<const char*>(pkl.get()), pkl_size);
  EXPECT_EQ(pickle.substr(0, 2), std::string("\x80\x02", 2));
  EXPECT_NE(pickle.find("ccollections\nOrderedDict\n"), std::string::npos);
  EXPECT_NE(pickle.find("ctorch\nFloatStorage\n"), std::string::npos);
  EXPECT_NE(pickle.find("ctorch._utils\n_rebuild_tensor_v2\n"), std::string::npos);
  EXPECT_EQ(pickle.back(), '.');
}

TEST_F(CheckpointTest, WriteFailureLeavesNothing) {
  const std::string bad = path("no/such/dir/x.pth");
  const std::string msg = error_of([&] { write_checkpoint(bad, {{"w", torch::ones({1})}}); });
  EXPECT_NE(msg.find("no/such/dir"), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_empty(dir_));

  StateDict dup{{"w", torch::ones({1})}, {"w", torch::ones({1})}};
  EXPECT_NE(error_of([&] { write_checkpoint(path("d.pth"), dup); }).find("duplicate key 'w'"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir_));
}

// ---------------------------------------------------------------------------------------------------------
// Hand-made pickles: opcodes beyond what torch.save emits, shared storages, views.

TEST_F(CheckpointTest, ReadsProtocol4StyleAndOpaqueObjects) {
  Pickle p;
  p.proto(4).op(0x95).u(0, 8);  // FRAME (length ignored)
  p.op('}').op(0x94);           // EMPTY_DICT, MEMOIZE -> memo 0
  p.mark();
  // 'epoch': LONG1 2 bytes = 300
  p.short_str("epoch").op(0x8a).u(2, 1).u(300, 2);
  // 'state_dict': OrderedDict via STACK_GLOBAL
  p.short_str("state_dict").short_str("collections").short_str("OrderedDict").op(0x93).op(')').op('R').op(0x94);
  p.mark();
  // 'a': Parameter around a (2, 3) view of float storage '0' (6 elements); memoize the rebuild global (1st
  // BINPUT 10), 'storage' (BINPUT 11), torch.FloatStorage (LONG_BINPUT 12) and the tensor (BINPUT 13).
  p.short_str("a").global("torch._utils", "_rebuild_parameter");
  p.global("torch._utils", "_rebuild_tensor_v2").op('q').u(10, 1).mark();
  p.mark().str("storage").op('q').u(11, 1).global("torch", "FloatStorage").op('r').u(12, 4);
  p.str("0").str("cuda:1").int1(6).tuple().op('Q');
  p.int1(0).int1(2).int1(3).op(0x86).int1(3).int1(1).op(0x86).op(0x89).op(')').tuple().op('R');
  p.op(0x88).ordered_dict().op(0x87).op('R').op('q').u(13, 1);  // (tensor, True, OrderedDict()) TUPLE3
  // 'b': elements 4..5 of the same storage (shared record, offset 4), built from memoized pieces.
  p.short_str("b").op('h').u(10, 1).mark();
  p.mark().op('h').u(11, 1).op('j').u(12, 4).str("0").str("cpu").int1(6).tuple().op('Q');
  p.int1(4).int1(2).op(0x85).int1(1).op(0x85).op(0x89).op('N').tuple().op('R');
  // 'c': int64 storage '1' seen through a transposing stride: c[i][j] = s[i + 3 j].
  p.short_str("c").tensor("LongStorage", "1", 6, 0, {3, 2}, {1, 3});
  // 'd': the very same object as 'a' (BINGET of the memoized tensor).
  p.short_str("d").op('h').u(13, 1);
  p.op('u');  // SETITEMS into the OrderedDict
  // BUILD with {'_metadata': {'': {'version': 1}}}, as nn.Module.state_dict() pickles it.
  p.op('}').short_str("_metadata").op('}').short_str("").op('}').short_str("version").int1(1).op('s').op('s');
  p.op('s').op('b');
  // 'optimizer': nested plain data and objects, parsed and skipped.
  p.short_str("optimizer").op('}').mark();
  // 'state': {0: {'step': -5, 'exp_avg': tensor}}
  p.short_str("state").op('}').int1(0).op('}');
  p.short_str("step").op('J').u(static_cast<uint32_t>(-5), 4).op('s');
  p.short_str("exp_avg").tensor("DoubleStorage", "2", 2, 0, {2}, {1}).op('s').op('s');
  // 'param_groups': [{'lr': 0.1, 'betas': (900, 999), 'params': [0, 1], ...}] via EMPTY_LIST + APPENDS and DICT
  p.short_str("param_groups").op(']').op('q').u(20, 1).mark();
  p.mark().short_str("lr").op('G');
  const double lr = 0.1;
  uint64_t bits;
  std::memcpy(&bits, &lr, sizeof bits);
  for (int i = 7; i >= 0; --i) p.op(static_cast<uint8_t>(bits >> (8 * i)));
  p.short_str("betas").op('M').u(900, 2).op('M').u(999, 2).op(0x86);
  p.short_str("params").op(']').int1(0).op('a').int1(1).op('a');
  p.short_str("blob").op('B').u(3, 4).s += "xyz";
  p.short_str("sblob").op('C').u(2, 1).s += "ab";
  p.short_str("old").op('T').u(2, 4).s += "hi";
  p.short_str("olds").op('U').u(1, 1).s += "h";
  p.short_str("u8").op(0x8d).u(1, 8).s += "z";
  p.short_str("flag").op(0x88);
  p.short_str("none").op('N');
  p.op('d');  // DICT from the mark
  p.op('e');  // APPENDS it onto the list
  // An object built by NEWOBJ and given state by BUILD, and one built by REDUCE: both opaque.
  p.short_str("sched").global("torch.optim.lr_scheduler", "StepLR").op(')').op(0x81);
  p.op('}').short_str("step_size").int1(10).op('s').op('b');
  p.short_str("misc").global("builtins", "set").op(']').op(0x85).op('R');
  p.op('u');  // SETITEMS into the optimizer dict
  p.short_str("monitor_best").op('G').u(0, 8);
  p.op('u').op('.');  // SETITEMS into the top-level dict, STOP

  write_archive(path("p4.pth"), p.s,
                {{"data/0", le_bytes<float>({0, 1, 2, 3, 4, 5})},
                 {"data/1", le_bytes<int64_t>({10, 11, 12, 13, 14, 15})},
                 {"data/2", le_bytes<double>({0.5, 0.25})}});
  const CheckpointInfo info = read_checkpoint(path("p4.pth"));
  EXPECT_EQ(info.epoch, 300);
  EXPECT_EQ(info.top_level_keys, (std::vector<std::string>{"epoch", "state_dict", "optimizer", "monitor_best"}));
  ASSERT_EQ(keys_of(info.state_dict), (std::vector<std::string>{"a", "b", "c", "d"}));
  const StateDict& sd = info.state_dict;
  EXPECT_TRUE(torch::equal(sd[0].second, torch::arange(6, torch::kFloat).reshape({2, 3})));
  EXPECT_TRUE(torch::equal(sd[1].second, torch::tensor({4.0f, 5.0f})));
  EXPECT_TRUE(torch::equal(sd[2].second, torch::tensor({10, 13, 11, 14, 12, 15}, torch::kLong).reshape({3, 2})));
  EXPECT_EQ(sd[2].second.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(sd[3].second, sd[0].second));
  EXPECT_FALSE(sd[0].second.requires_grad());
}

TEST_F(CheckpointTest, DuplicateKeysKeepFirstPositionAndLastValue) {
  // Python dict semantics: {'x': t0, 'y': t1, 'x': t2} has keys [x, y] and x -> t2.
  Pickle p;
  p.proto(2).op('}').mark();
  p.str("x").tensor("FloatStorage", "0", 1, 0, {1}, {1});
  p.str("y").tensor("FloatStorage", "1", 1, 0, {1}, {1});
  p.str("x").tensor("FloatStorage", "2", 1, 0, {1}, {1});
  p.op('u').op('.');
  write_archive(path("dup.pth"), p.s,
                {{"data/0", le_bytes<float>({0})}, {"data/1", le_bytes<float>({1})}, {"data/2", le_bytes<float>({2})}});
  const StateDict sd = read_checkpoint(path("dup.pth")).state_dict;
  ASSERT_EQ(keys_of(sd), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(sd[0].second.item<float>(), 2.0f);
}

// ---------------------------------------------------------------------------------------------------------
// Bad inputs.

TEST_F(CheckpointTest, RejectsMissingFile) {
  const std::string missing = path("missing.pth");
  const std::string msg = error_of([&] { read_checkpoint(missing); });
  EXPECT_NE(msg.find("cannot read checkpoint '" + missing + "'"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsNonZip) {
  write_bytes(path("text.pth"), "this is not a zip file, just some text that is long enough\n");
  const std::string msg = error_of([&] { read_checkpoint(path("text.pth")); });
  EXPECT_NE(msg.find("cannot read checkpoint '" + path("text.pth") + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a zip archive"), std::string::npos) << msg;

  write_bytes(path("empty.pth"), "");
  EXPECT_NE(error_of([&] { read_checkpoint(path("empty.pth")); }).find("cannot read checkpoint"), std::string::npos);
}

TEST_F(CheckpointTest, RejectsTruncatedFile) {
  StateDict sd{{"w", torch::arange(1000, torch::kFloat)}, {"v", torch::ones({4, 4}, torch::kHalf)}};
  write_checkpoint(path("full.pth"), sd, {});
  const std::string bytes = read_bytes(path("full.pth"));
  ASSERT_GT(bytes.size(), 4000u);
  for (size_t keep : {bytes.size() - 1, bytes.size() - 30, bytes.size() / 2, size_t{100}, size_t{10}}) {
    write_bytes(path("cut.pth"), bytes.substr(0, keep));
    const std::string msg = error_of([&] { read_checkpoint(path("cut.pth")); });
    EXPECT_NE(msg.find("cannot read checkpoint '" + path("cut.pth") + "'"), std::string::npos) << keep << ": " << msg;
    EXPECT_NE(msg.find("damaged zip archive"), std::string::npos) << keep << ": " << msg;
  }
}

TEST_F(CheckpointTest, RejectsTruncatedPickle) {
  std::string pkl = single_tensor_pickle("FloatStorage", 2, 0, {2}, {1});
  for (size_t keep : {pkl.size() - 1, pkl.size() - 5, size_t{20}, size_t{3}}) {
    write_archive(path("tp.pth"), pkl.substr(0, keep), {{"data/0", le_bytes<float>({1, 2})}});
    const std::string msg = error_of([&] { read_checkpoint(path("tp.pth")); });
    EXPECT_NE(msg.find("truncated pickle"), std::string::npos) << keep << ": " << msg;
    EXPECT_NE(msg.find("data.pkl"), std::string::npos) << msg;
  }
  // The untruncated pickle is fine (so the failures above are due to the cut).
  write_archive(path("tp.pth"), pkl, {{"data/0", le_bytes<float>({1, 2})}});
  EXPECT_TRUE(torch::equal(read_checkpoint(path("tp.pth")).state_dict.at(0).second, torch::tensor({1.0f, 2.0f})));
}

TEST_F(CheckpointTest, RejectsUnsupportedOpcode) {
  // INT (protocol 0 text integer) right after PROTO.
  std::string pkl = std::string("\x80\x02", 2) + "I42\n.";
  write_archive(path("op.pth"), pkl, {});
  const std::string msg = error_of([&] { read_checkpoint(path("op.pth")); });
  EXPECT_NE(msg.find("unsupported pickle opcode 0x49 ('I') at offset 2"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsUnknownStorageType) {
  write_archive(path("q.pth"), single_tensor_pickle("QInt8Storage", 2, 0, {2}, {1}), {{"data/0", "ab"}});
  const std::string msg = error_of([&] { read_checkpoint(path("q.pth")); });
  EXPECT_NE(msg.find("unknown storage type torch.QInt8Storage"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsStorageTooSmall) {
  // Size (3, 2) with stride (2, 1) needs 6 elements; the storage has 5.
  write_archive(path("s.pth"), single_tensor_pickle("FloatStorage", 5, 0, {3, 2}, {2, 1}),
                {{"data/0", le_bytes<float>({0, 1, 2, 3, 4})}});
  std::string msg = error_of([&] { read_checkpoint(path("s.pth")); });
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;

  // Offset pushes the last element out.
  write_archive(path("s.pth"), single_tensor_pickle("FloatStorage", 5, 4, {2}, {1}),
                {{"data/0", le_bytes<float>({0, 1, 2, 3, 4})}});
  msg = error_of([&] { read_checkpoint(path("s.pth")); });
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;

  // The pickle claims 8 elements but the record holds 5 floats.
  write_archive(path("s.pth"), single_tensor_pickle("FloatStorage", 8, 0, {8}, {1}),
                {{"data/0", le_bytes<float>({0, 1, 2, 3, 4})}});
  msg = error_of([&] { read_checkpoint(path("s.pth")); });
  EXPECT_NE(msg.find("too few"), std::string::npos) << msg;

  // The same shape within bounds loads.
  write_archive(path("s.pth"), single_tensor_pickle("FloatStorage", 5, 1, {2, 2}, {2, 1}),
                {{"data/0", le_bytes<float>({0, 1, 2, 3, 4})}});
  EXPECT_TRUE(torch::equal(read_checkpoint(path("s.pth")).state_dict.at(0).second,
                           torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2})));
}

TEST_F(CheckpointTest, RejectsMissingRecordAndNegativeOffset) {
  write_archive(path("m.pth"), single_tensor_pickle("FloatStorage", 2, 0, {2}, {1}), {});
  std::string msg = error_of([&] { read_checkpoint(path("m.pth")); });
  EXPECT_NE(msg.find("missing storage record 'data/0'"), std::string::npos) << msg;

  // Offset as LONG1 0xfe = -2 (sign extension of a one-byte LONG1).
  Pickle p;
  p.proto(2).op('}').str("w").global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int1(2).tuple().op('Q');
  p.op(0x8a).u(1, 1).u(0xfe, 1).int1(1).op(0x85).int1(1).op(0x85).op(0x89).op(')').tuple().op('R').op('s').op('.');
  write_archive(path("n.pth"), p.s, {{"data/0", le_bytes<float>({1, 2})}});
  msg = error_of([&] { read_checkpoint(path("n.pth")); });
  EXPECT_NE(msg.find("negative storage offset -2"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RejectsNonTensorStateDictEntries) {
  Pickle p;
  p.proto(2).op('}').str("model").op('}').op('s').op('.');  // {'model': {}}: no state_dict, not a state_dict
  write_archive(path("x.pth"), p.s, {});
  const std::string msg = error_of([&] { read_checkpoint(path("x.pth")); });
  EXPECT_NE(msg.find("entry 'model'"), std::string::npos) << msg;

  Pickle list;
  list.proto(2).op(']').op('.');
  write_archive(path("l.pth"), list.s, {});
  EXPECT_NE(error_of([&] { read_checkpoint(path("l.pth")); }).find("not a dict"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------------------
// module_state_dict / load_state_dict.

TEST_F(CheckpointTest, ModuleStateDictOrder) {
  Small m;
  EXPECT_EQ(keys_of(module_state_dict(m)),
            (std::vector<std::string>{"fc.weight", "fc.bias", "bn.weight", "bn.bias", "table", "bn.running_mean",
                                      "bn.running_var", "bn.num_batches_tracked"}));
  EXPECT_EQ(keys_of(module_state_dict(m, "model.")).front(), "model.fc.weight");
  Twice t;
  EXPECT_EQ(keys_of(module_state_dict(t)), (std::vector<std::string>{"a.weight", "a.bias", "b.weight", "b.bias"}));
}

TEST_F(CheckpointTest, LoadStateDictThroughFile) {
  torch::manual_seed(1);
  Small source;
  {
    torch::NoGradGuard no_grad;
    source.bn->running_mean.fill_(0.5);
    source.bn->num_batches_tracked.fill_(9);
  }
  StateDict sd = module_state_dict(source);
  for (auto& [key, t] : sd) {
    if (t.is_floating_point()) t = t.to(torch::kHalf);  // stored as float16, loaded into float32
  }
  write_checkpoint(path("src.pth"), sd, {});

  torch::manual_seed(2);
  Small target;
  ASSERT_FALSE(torch::equal(target.fc->weight, source.fc->weight));
  const LoadReport report = load_state_dict(target, read_checkpoint(path("src.pth")).state_dict);
  EXPECT_EQ(report.loaded.size(), 8u);
  EXPECT_TRUE(report.ignored.empty());
  EXPECT_EQ(target.fc->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(target.fc->weight, source.fc->weight.to(torch::kHalf).to(torch::kFloat)));
  EXPECT_TRUE(torch::equal(target.bn->running_mean, torch::full({3}, 0.5)));
  EXPECT_EQ(target.bn->num_batches_tracked.item<int64_t>(), 9);
  EXPECT_TRUE(target.fc->weight.requires_grad());  // still a trainable parameter
}

TEST_F(CheckpointTest, LoadStateDictReportsAllProblemsAndChangesNothing) {
  torch::manual_seed(3);
  Small m;
  const torch::Tensor before = m.fc->weight.clone();
  StateDict sd = module_state_dict(m);
  for (auto& [key, t] : sd) t = torch::zeros_like(t);
  // Wrong key: fc.bias renamed; wrong shape: table (2, 3) -> (3, 2); an extra entry.
  for (auto& [key, t] : sd) {
    if (key == "fc.bias") key = "fc.biass";
    if (key == "table") t = torch::zeros({3, 2});
  }
  sd.emplace_back("extra.weight", torch::zeros({7}));

  const std::string msg = error_of([&] { load_state_dict(m, sd); });
  EXPECT_NE(msg.find("fc.bias [3]"), std::string::npos) << msg;       // missing, with its shape
  EXPECT_NE(msg.find("fc.biass [3]"), std::string::npos) << msg;      // unexpected
  EXPECT_NE(msg.find("extra.weight [7]"), std::string::npos) << msg;  // unexpected
  EXPECT_NE(msg.find("table: module [2, 3], state_dict [3, 2]"), std::string::npos) << msg;
  EXPECT_TRUE(torch::equal(m.fc->weight, before));  // nothing copied
}

TEST_F(CheckpointTest, LoadStateDictWrongKeyOnly) {
  Small m;
  StateDict sd = module_state_dict(m);
  sd[0].first = "fc.wieght";
  const std::string msg = error_of([&] { load_state_dict(m, sd); });
  EXPECT_NE(msg.find("fc.wieght"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fc.weight"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, LoadStateDictWrongShapeOnly) {
  Small m;
  StateDict sd = module_state_dict(m);
  for (auto& [key, t] : sd) {
    if (key == "bn.running_var") t = torch::ones({4});
  }
  const std::string msg = error_of([&] { load_state_dict(m, sd); });
  EXPECT_NE(msg.find("bn.running_var: module [3], state_dict [4]"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, LoadStateDictIgnorableUnexpected) {
  Small m;
  StateDict sd = module_state_dict(m);
  sd.emplace_back("aux.pe", torch::zeros({5}));
  sd.emplace_back("aux.more.x", torch::zeros({1}));
  sd.emplace_back("exact_name", torch::zeros({1}));
  LoadStateOptions options;
  options.ignorable_unexpected = {"aux.", "exact_name"};
  const LoadReport report = load_state_dict(m, sd, options);
  EXPECT_EQ(report.ignored, (std::vector<std::string>{"aux.pe", "aux.more.x", "exact_name"}));
  EXPECT_EQ(report.loaded.size(), 8u);

  // A prefix without the trailing '.' is an exact name only: "aux" does not cover "aux.pe".
  options.ignorable_unexpected = {"aux", "exact_name"};
  const std::string msg = error_of([&] { load_state_dict(m, sd, options); });
  EXPECT_NE(msg.find("aux.pe"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, LoadStateDictSharedSubmoduleNeedsBothNames) {
  Twice t;
  StateDict sd = module_state_dict(t);
  for (auto& [key, v] : sd) v = torch::full_like(v, 2.0);
  EXPECT_EQ(load_state_dict(t, sd).loaded.size(), 4u);
  EXPECT_TRUE(torch::equal(t.a->weight, torch::full({2, 2}, 2.0)));

  StateDict only_a;
  for (const auto& [key, v] : sd) {
    if (key.rfind("a.", 0) == 0) only_a.emplace_back(key, v);
  }
  const std::string msg = error_of([&] { load_state_dict(t, only_a); });
  EXPECT_NE(msg.find("b.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b.bias"), std::string::npos) << msg;
}

}  // namespace
}  // namespace cmn::model
