// SPDX-License-Identifier: MIT
#include "common/csv.hpp"

#include <csv.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace shapebias::tools {

csv_table read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(quote_name(path) + ": cannot open: " + std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  struct sink {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> row;
  } s;
  csv_parser p;
  if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI) != 0) throw std::runtime_error("libcsv: cannot initialise a parser");
  auto field = [](void* f, std::size_t n, void* d) {
    static_cast<sink*>(d)->row.emplace_back(static_cast<const char*>(f), n);
  };
  auto end_row = [](int, void* d) {
    auto* k = static_cast<sink*>(d);
    k->rows.push_back(std::move(k->row));
    k->row.clear();
  };
  const bool ok = csv_parse(&p, text.data(), text.size(), field, end_row, &s) == text.size() &&
                  csv_fini(&p, field, end_row, &s) == 0;
  const std::string err = ok ? "" : csv_strerror(csv_error(&p));
  csv_free(&p);
  if (!ok) throw io_error(quote_name(path) + ": not valid CSV (" + err + ")");
  if (s.rows.empty()) throw io_error(quote_name(path) + ": empty file (a header row is needed)");
  csv_table t{path, std::move(s.rows.front()), {}};
  t.rows.assign(std::make_move_iterator(s.rows.begin() + 1), std::make_move_iterator(s.rows.end()));
  for (std::size_t r = 0; r < t.rows.size(); ++r)
    if (t.rows[r].size() != t.header.size())
      throw io_error(t.where(r) + ": " + std::to_string(t.rows[r].size()) + " fields, the header has " +
                     std::to_string(t.header.size()));
  return t;
}

std::string csv_text(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace shapebias::tools
