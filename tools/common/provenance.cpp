// SPDX-License-Identifier: MIT
#include "common/provenance.hpp"

#include <hdf5.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <memory>
#include <random>
#include <xtensor/xtensor_config.hpp>

#include "shapebias/core/errors.hpp"
#include "shapebias/io/provenance.hpp"
#include "shapebias/version.hpp"

#ifndef SHAPEBIAS_GIT_DESCRIBE
#define SHAPEBIAS_GIT_DESCRIBE "unknown"
#endif

namespace shapebias::tools {
namespace {

struct md_ctx {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  md_ctx() { EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr); }
  void add(const void* p, std::size_t n) { EVP_DigestUpdate(ctx.get(), p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out += digits[md[i] >> 4];
      out += digits[md[i] & 15];
    }
    return out;
  }
};

std::string quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/:=+@%") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw io_error(quote_name(path) + ": cannot open for reading");
  md_ctx md;
  std::vector<char> buf(1 << 20);
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) md.add(buf.data(), n);
  if (std::ferror(f.get())) throw io_error(quote_name(path) + ": read error");
  return md.hex();
}

std::string sha256_text(const std::string& text) {
  md_ctx md;
  md.add(text.data(), text.size());
  return md.hex();
}

std::string shell_command(std::span<char* const> args) {
  std::string out;
  for (std::size_t i = 0; i < args.size(); ++i) out += (i ? " " : "") + quote(args[i]);
  return out;
}

std::string last_id(const std::vector<std::string>& log) {
  if (log.empty()) return "";
  const auto rec = nlohmann::json::parse(log.back(), nullptr, false);
  return rec.is_object() ? rec.value("id", "") : "";
}

nlohmann::json start_record(const std::string& verb, std::span<char* const> args,
                            const std::vector<std::string>& input_log) {
  std::random_device rd;
  char id[17];
  std::snprintf(id, sizeof id, "%08x%08x", rd(), rd());
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  nlohmann::json parents = nlohmann::json::array();
  if (const auto p = last_id(input_log); !p.empty()) parents.push_back(p);
  return {
      {"id", id},
      {"parent", parents},
      {"program", "shapebias"},
      {"verb", verb},
      {"version", std::string(version_string) + " (" + SHAPEBIAS_GIT_DESCRIBE + ")"},
      {"argv", "shapebias " + verb + (args.size() > 1 ? " " + shell_command(args.subspan(1)) : "")},
      {"started", io::utc_now()},
      {"host", host},
      {"libraries",
       {{"hdf5", std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel)},
        {"xtensor", std::to_string(XTENSOR_VERSION_MAJOR) + "." + std::to_string(XTENSOR_VERSION_MINOR) + "." +
                        std::to_string(XTENSOR_VERSION_PATCH)},
        {"zlib", zlibVersion()}}},
  };
}

nlohmann::json parse_log(const std::vector<std::string>& log) {
  auto out = nlohmann::json::array();
  for (const auto& r : log) {
    auto j = nlohmann::json::parse(r, nullptr, false);
    out.push_back(j.is_discarded() ? nlohmann::json(r) : j);
  }
  return out;
}

}  // namespace shapebias::tools
