// A StateDict against a module: load_state_dict (validated as a whole before any tensor is touched) and
// module_state_dict. Reading and writing the torch.save archives: checkpoint_read.cc, checkpoint_write.cc.
#include "cmn/model/checkpoint.h"

#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "checkpoint_internal.h"

namespace cmn::model {

namespace {

using checkpoint_detail::shape_string;

bool is_ignorable(const std::string& key, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (p.empty()) continue;
    if (key == p) return true;
    if (p.back() == '.' && key.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

}  // namespace

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state_dict, const LoadStateOptions& options) {
  // The module's tensors by name. A submodule registered under two names shows up under both (LibTorch does
  // not deduplicate, and neither does Python's state_dict), so both names must be in the file.
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) targets.emplace_back(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) targets.emplace_back(item.key(), item.value());
  }

  std::unordered_map<std::string, const torch::Tensor*> file;
  std::vector<std::string> duplicates;
  for (const auto& [key, t] : state_dict) {
    if (!file.emplace(key, &t).second) duplicates.push_back(key);
  }

  std::vector<std::string> missing;
  std::vector<std::string> mismatched;
  std::unordered_set<std::string> wanted;
  for (const auto& [name, target] : targets) {
    wanted.insert(name);
    auto it = file.find(name);
    if (it == file.end()) {
      missing.push_back(name + " " + shape_string(target.sizes()));
    } else if (!it->second->defined()) {
      mismatched.push_back(name + ": module " + shape_string(target.sizes()) + ", state_dict undefined");
    } else if (it->second->sizes() != target.sizes()) {
      mismatched.push_back(name + ": module " + shape_string(target.sizes()) + ", state_dict " +
                           shape_string(it->second->sizes()));
    }
  }
  LoadReport report;
  std::vector<std::string> unexpected;
  for (const auto& [key, t] : state_dict) {
    if (wanted.count(key)) continue;
    if (is_ignorable(key, options.ignorable_unexpected)) {
      report.ignored.push_back(key);
    } else {
      unexpected.push_back(key + " " + (t.defined() ? shape_string(t.sizes()) : std::string("undefined")));
    }
  }

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !duplicates.empty()) {
    std::ostringstream os;
    os << "load_state_dict: the state_dict does not match the module";
    auto list = [&](const char* title, const std::vector<std::string>& items) {
      if (items.empty()) return;
      os << "\n  " << title << " (" << items.size() << "):";
      for (const auto& s : items) os << "\n    " << s;
    };
    list("missing keys (in the module, not in the state_dict)", missing);
    list("unexpected keys (in the state_dict, not in the module)", unexpected);
    list("shape mismatches", mismatched);
    list("duplicate keys in the state_dict", duplicates);
    TORCH_CHECK(false, os.str());
  }

  // Only now, with everything validated, touch the module: a failed load leaves it unchanged.
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const torch::Tensor& source = *file.at(name);
    target.copy_(source.to(target.dtype()));
    report.loaded.push_back(name);
  }
  return report;
}

StateDict module_state_dict(const torch::nn::Module& module, const std::string& prefix) {
  StateDict out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  return out;
}

}  // namespace cmn::model
