// SPDX-License-Identifier: MIT
// Taps by graph surgery: every prim::CallMethod on a submodule in the top block of forward is
// inlined (recursively), and the value each module call returned is remembered by module path. The
// selected values are cloned where they are produced (later in-place ops such as ReLU(inplace=True)
// or `out += identity` would otherwise change them) and returned as a tuple with the model output.
#include "torch/model.hpp"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>

#include "common/suggest.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {
namespace {

namespace jit = torch::jit;

struct inlined {
  std::shared_ptr<jit::Graph> graph;
  std::vector<jit::Value*> values;
  std::vector<tap_point> points;
};

std::string short_type(const c10::ClassTypePtr& t) { return t->name() ? t->name()->name() : std::string("?"); }

// Inlines every method call on self or a submodule reachable from self (top block only) and
// records the value returned by each submodule's forward.
inlined inline_all(const jit::Module& m) {
  inlined out;
  out.graph = m.get_method("forward").graph()->copy();
  auto& g = *out.graph;
  std::map<const jit::Value*, std::string> path;  // module-valued Value -> module path ("" = self)
  path[g.inputs()[0]] = "";
  std::map<std::string, int> calls;
  struct rec { std::string path; std::string type; jit::Value* v; };
  std::vector<rec> recs;

  for (jit::Node* n = g.block()->nodes().front(); n != g.block()->return_node(); n = n->next()) {
    if (n->kind() == c10::prim::GetAttr) {
      auto it = path.find(n->input(0));
      auto cls = n->output()->type()->cast<c10::ClassType>();
      if (it != path.end() && cls && cls->is_module()) {
        const std::string name = n->s(c10::attr::name);
        path[n->output()] = it->second.empty() ? name : it->second + "." + name;
      }
      continue;
    }
    if (n->kind() != c10::prim::CallMethod) continue;
    auto it = path.find(n->input(0));
    if (it == path.end()) continue;
    const std::string p = it->second;
    auto cls = n->input(0)->type()->expect<c10::ClassType>();
    const std::string method = n->s(c10::attr::name);
    auto& fn = jit::toGraphFunction(cls->getMethod(method));
    jit::Node* prev = n->prev();
    const std::vector<jit::Value*> old(n->outputs().begin(), n->outputs().end());
    auto outs = jit::inlineCallTo(n, &fn, /*inline_optimized_graph=*/false);
    // A recorded value may be the output of the call just inlined (a module whose forward ends
    // in a call to a child): follow it to its replacement.
    for (auto& r : recs)
      for (std::size_t i = 0; i < old.size(); ++i)
        if (r.v == old[i]) r.v = outs[i];
    if (method == "forward" && !p.empty() && outs.size() == 1) {
      ++calls[p];
      recs.push_back({p, short_type(cls), outs[0]});
    }
    n = prev;  // continue with the first inlined node
  }
  std::map<std::string, int> seen;
  for (auto& r : recs) {
    const std::string name = calls[r.path] > 1 ? r.path + "#" + std::to_string(++seen[r.path]) : r.path;
    out.points.push_back({name, r.type});
    out.values.push_back(r.v);
  }
  return out;
}

// True when a node after v's producer writes to memory v may alias: only then is a copy needed.
bool written_later(const jit::AliasDb& alias, jit::Value* v) {
  const jit::ValueSet vs{v};
  for (jit::Node* n = v->node()->next(); n->kind() != c10::prim::Return; n = n->next())
    if (alias.writesToAlias(n, vs)) return true;
  return false;
}

}  // namespace

tapped_model::tapped_model(const std::string& path, const std::string& device) : path_(path), device_(device) {
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) std::fclose(f);
  else throw io_error(quote_name(path) + ": cannot open model: " + std::strerror(errno));
  try {
    module_ = torch::jit::load(path, device_);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    throw std::runtime_error("cannot load TorchScript model '" + path + "': " + what.substr(0, what.find('\n')));
  }
  module_.eval();
  const auto all = inline_all(module_);
  auto taken = [&](const char* n) {
    return std::any_of(all.points.begin(), all.points.end(), [&](const tap_point& p) { return p.name == n; });
  };
  if (!taken("input")) points_.push_back({"input", "input", tap_point::kind::input});
  points_.insert(points_.end(), all.points.begin(), all.points.end());
  if (!taken("logits")) points_.push_back({"logits", "output", tap_point::kind::output});
}

void tapped_model::select(const std::vector<std::string>& names) {
  auto all = inline_all(module_);  // a fresh graph: select() may run more than once
  auto& g = *all.graph;
  std::vector<std::string> valid;
  for (auto& p : points_) valid.push_back(p.name);
  selected_.clear();
  const std::size_t first_module = points_.front().what == tap_point::kind::input ? 1 : 0;
  for (const auto& a : ablations_) {
    const auto it = std::find_if(points_.begin(), points_.end(), [&](const tap_point& p) { return p.name == a.layer; });
    if (it == points_.end() || it->what != tap_point::kind::module) {
      std::vector<std::string> modules;
      for (auto& p : points_)
        if (p.what == tap_point::kind::module) modules.push_back(p.name);
      throw std::invalid_argument(unknown_name_message("layer to ablate", a.layer, quote_name(path_), modules));
    }
    jit::Value* v = all.values[static_cast<std::size_t>(it - points_.begin()) - first_module];
    // The new value replaces every later use of the layer's output (taps of it included).
    jit::WithInsertPoint guard(v->node()->next());
    jit::Value* index = g.insertConstant(torch::tensor(a.channels, torch::kLong).to(device_));
    jit::Value* nv = nullptr;
    if (a.keep) {
      jit::Value* kept = g.insert(c10::aten::index_select, {v, 1, index});
      jit::Value* zeros = g.insert(c10::aten::zeros_like, {v});
      nv = g.insert(c10::aten::index_copy, {zeros, 1, index, kept});
    } else {
      nv = g.insert(c10::aten::index_fill, {v, 1, index, 0.0});
    }
    v->replaceAllUsesAfterNodeWith(nv->node(), nv);
    for (auto& r : all.values)
      if (r == v) r = nv;
  }
  std::vector<jit::Value*> outs;
  jit::AliasDb alias(all.graph);
  for (const auto& name : names) {
    auto it = std::find(valid.begin(), valid.end(), name);
    if (it == valid.end()) {
      // A module called several times has names "path#k"; say so for the bare path.
      std::vector<std::string> numbered;
      for (auto& v : valid)
        if (v.rfind(name + "#", 0) == 0) numbered.push_back(v);
      if (!numbered.empty())
        throw std::invalid_argument("layer '" + name + "' of " + quote_name(path_) + " is called " + std::to_string(numbered.size()) +
                                    " times in forward; name one call: '" + numbered.front() + "' … '" +
                                    numbered.back() + "'");
      throw std::invalid_argument(unknown_name_message("layer", name, quote_name(path_), valid));
    }
    const auto idx = static_cast<std::size_t>(it - valid.begin());
    selected_.push_back(static_cast<int>(idx));
    const auto& point = points_[idx];
    jit::Value* v = nullptr;
    if (point.what == tap_point::kind::input) v = g.inputs()[1];
    else if (point.what == tap_point::kind::output) v = g.outputs()[0];
    else v = all.values[idx - first_module];
    if (point.what == tap_point::kind::module && v->type()->isSubtypeOf(*c10::TensorType::get()) &&
        written_later(alias, v)) {
      // Snapshot the value where it is made: a later in-place op would otherwise change it.
      jit::WithInsertPoint guard(v->node()->next());
      v = g.insert(c10::aten::clone, {v});
    }
    outs.push_back(v);
  }
  jit::WithInsertPoint guard(g.return_node());
  auto* tuple = g.insertNode(g.createTuple(outs))->output();
  g.eraseOutput(0);
  g.registerOutput(tuple);
  fn_ = std::make_unique<jit::GraphFunction>("shapebias_tapped_forward", all.graph, nullptr);
}

std::vector<torch::jit::IValue> tapped_model::forward(const torch::Tensor& x) {
  if (!fn_) throw std::logic_error("tapped_model::forward before select()");
  torch::NoGradGuard no_grad;
  std::vector<torch::jit::IValue> stack{module_._ivalue(), x};
  fn_->run(stack);
  auto elems = stack.back().toTuple()->elements();
  std::vector<torch::jit::IValue> out(elems.begin(), elems.end());
  for (std::size_t i = 0; i < out.size(); ++i)
    if (points_[static_cast<std::size_t>(selected_[i])].what == tap_point::kind::output && out[i].isTuple())
      out[i] = out[i].toTuple()->elements().at(0);
  return out;
}

void tapped_model::freeze() {
  try {
    frozen_ = torch::jit::freeze(module_, c10::nullopt, /*optimize_numerics=*/false);
  } catch (const c10::Error&) {
    frozen_.reset();
  }
}

torch::Tensor tapped_model::logits(const torch::Tensor& x) {
  auto out = (frozen_ ? *frozen_ : module_).forward({x});
  if (out.isTuple()) out = out.toTuple()->elements().at(0);
  if (!out.isTensor() || out.toTensor().dim() != 2 || out.toTensor().size(0) != x.size(0))
    throw std::runtime_error("model " + quote_name(path_) + " must return [B, K] logits; it returned " +
                             (out.isTensor() ? c10::str(out.toTensor().sizes()) : "a " + out.tagKind()) +
                             " for a batch of " + std::to_string(x.size(0)));
  return out.toTensor();
}

}  // namespace shapebias::tools
