// SPDX-License-Identifier: MIT
#include "common/partial.hpp"

#include <algorithm>
#include <map>

#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

partial_info partial_info::of(const std::string& verb, const shard& s, nlohmann::json key) {
  return {verb, s.count, {s.index}, std::move(key)};
}

nlohmann::json partial_info::shard_record() const {
  if (whole()) return nullptr;
  return {{"shards", shards}, {"count", count}, {"rule", "input id mod count in shards"}};
}

nlohmann::json partial_info::to_json() const {
  return {{"verb", verb}, {"count", count}, {"shards", shards}, {"key", key}, {"format_version", 1}};
}

partial_info partial_info::from_json(const nlohmann::json& j, const std::string& file) {
  partial_info p;
  try {
    if (j.at("format_version").get<int>() != 1) throw std::invalid_argument("version");
    p.verb = j.at("verb").get<std::string>();
    p.count = j.at("count").get<std::uint64_t>();
    p.shards = j.at("shards").get<std::vector<std::uint64_t>>();
    p.key = j.at("key");
  } catch (const std::exception&) {
    throw io_error(quote_name(file) + ": its 'partial' record is damaged or of a newer format");
  }
  return p;
}

namespace {

std::string shown(const nlohmann::json& v) {
  auto s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace

partial_info check_parts(const std::vector<partial_info>& parts, const std::vector<std::string>& names, bool complete) {
  const auto& a = parts.at(0);
  std::map<std::uint64_t, std::size_t> seen;  // shard → part
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto& b = parts[i];
    const std::string an = quote_name(names[0]), bn = quote_name(names[i]);
    if (b.verb != a.verb) throw std::runtime_error(bn + " is a " + b.verb + " result, " + an + " a " + a.verb + " result");
    if (b.count != a.count)
      throw std::runtime_error(bn + " holds shards of " + std::to_string(b.count) + ", " + an + " of " + std::to_string(a.count) +
                               ": not shards of one run");
    if (b.key != a.key) {
      const auto path = nlohmann::json::diff(a.key, b.key).at(0).at("path").get<std::string>();
      const nlohmann::json::json_pointer ptr(path);
      const auto va = a.key.contains(ptr) ? shown(a.key.at(ptr)) : "nothing", vb = b.key.contains(ptr) ? shown(b.key.at(ptr)) : "nothing";
      throw std::runtime_error(bn + " and " + an + " differ in " + path + " (" + vb + " vs " + va + "): not shards of one run");
    }
    for (auto k : b.shards)
      if (auto [it, fresh] = seen.emplace(k, i); !fresh)
        throw std::runtime_error("shard " + std::to_string(k) + "/" + std::to_string(a.count) + " is in both " +
                                 quote_name(names[it->second]) + " and " + bn);
  }
  std::string missing;
  for (std::uint64_t k = 0; k < a.count; ++k)
    if (!seen.count(k)) missing += (missing.empty() ? "" : ", ") + std::to_string(k) + "/" + std::to_string(a.count);
  if (!missing.empty() && complete) throw std::runtime_error("missing shard(s) " + missing + ": merge needs every shard of the run");
  partial_info whole = a;
  whole.shards.clear();
  for (const auto& [k, i] : seen) whole.shards.push_back(k);
  return whole;
}

void write_partial(hid_t file, const partial_info& p, const std::string& name) {
  io::h5::write_attribute(file, "partial", p.to_json().dump(), name);
}

partial_info read_partial(hid_t file, const std::string& name) {
  if (!io::h5::has_attribute(file, "partial"))
    throw io_error(quote_name(name) + ": holds no partial result (not written by dump, attack, eval, tv, dissect or diversity of "
                   "this version)");
  const auto j = nlohmann::json::parse(io::h5::read_string_attribute(file, "partial", name), nullptr, false);
  return partial_info::from_json(j, name);
}

nlohmann::json merged_record(const std::vector<nlohmann::json>& part_records, nlohmann::json merge_step) {
  auto rec = part_records.at(0);
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& r : part_records) {
    nlohmann::json p;
    for (const char* k : {"id", "host", "argv", "started", "finished"})
      if (r.contains(k)) p[k] = r[k];
    if (r.contains("params") && r["params"].contains("shard")) p["shard"] = r["params"]["shard"];
    parts.push_back(p);
  }
  merge_step.erase("libraries");
  rec["merge"] = {{"step", merge_step}, {"parts", parts}};
  rec.erase("finished");
  if (rec.contains("params")) rec["params"]["shard"] = nullptr;
  return rec;
}

nlohmann::json source_identity(const nlohmann::json& log) {
  if (!log.is_array()) return nullptr;
  for (auto it = log.rbegin(); it != log.rend(); ++it) {
    if (!it->is_object() || !it->contains("model")) continue;
    const auto& r = *it;
    const auto params = r.value("params", nlohmann::json::object());
    return {{"model_sha256", r["model"].value("sha256", "")},
            {"preprocessing", params.value("preprocessing", nlohmann::json())},
            {"ablate", params.value("ablate", nlohmann::json())}};
  }
  return nullptr;
}

void keep_shard_rows(io::batch& b, const shard& sh) {
  std::vector<std::size_t> keep;
  for (std::size_t r = 0; r < b.rows(); ++r)
    if (sh.contains(b.ids[r])) keep.push_back(r);
  if (keep.size() == b.rows()) return;
  auto pick = [&](auto& v) {
    for (std::size_t j = 0; j < keep.size(); ++j) v[j] = v[keep[j]];
    v.resize(keep.size());
  };
  pick(b.ids);
  pick(b.labels);
  for (auto& d : b.data) {
    auto shape = d.shape();
    const std::size_t per = shape[0] ? d.size() / shape[0] : 0;
    shape[0] = keep.size();
    xt::xarray<float> out(shape);
    for (std::size_t j = 0; j < keep.size(); ++j) std::copy_n(d.data() + keep[j] * per, per, out.data() + j * per);
    d = std::move(out);
  }
}

io::h5::handle create_memory_file(const std::string& name) {
  io::h5::quiet();
  io::h5::handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_core(fapl.get(), std::size_t{64} << 20, 0);  // grows in 64 MiB steps: states run to GBs
  return io::h5::handle(io::h5::check(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), name,
                                      "cannot create an HDF5 file in memory"));
}

std::string file_image(hid_t file, const std::string& name) {
  io::h5::check(H5Fflush(file, H5F_SCOPE_GLOBAL), name, "cannot flush");
  const auto n = io::h5::check(H5Fget_file_image(file, nullptr, 0), name, "cannot size the file image");
  std::string bytes(static_cast<std::size_t>(n), '\0');
  io::h5::check(H5Fget_file_image(file, bytes.data(), bytes.size()), name, "cannot copy the file image");
  return bytes;
}

io::h5::handle open_file_image(const std::string& bytes, const std::string& name) {
  io::h5::quiet();
  io::h5::handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_core(fapl.get(), std::size_t{64} << 20, 0);  // grows in 64 MiB steps: states run to GBs
  H5Pset_file_image(fapl.get(), const_cast<char*>(bytes.data()), bytes.size());
  return io::h5::handle(io::h5::check(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()), name,
                                      "cannot open the partial result received"));
}

std::string partial_image(const std::string& name, const partial_info& part, const nlohmann::json& rec,
                          const std::function<void(hid_t)>& save) {
  auto h5 = create_memory_file(name);
  save(h5.get());
  write_partial(h5.get(), part, name);
  io::h5::write_attribute(h5.get(), "provenance", nlohmann::json{{"run", rec}}.dump(), name);
  return file_image(h5.get(), name);
}

}  // namespace shapebias::tools
