// SPDX-License-Identifier: MIT
// Probe sets in Broden's on-disk format (NetDissect; peers.md §5.2), read as NetDissect-Lite reads
// them:
//   index.csv      image,split,ih,iw,sh,sw and one column per category; a category cell is a
//                  ';'-separated list of segmentation PNGs (paths relative to images/, one label
//                  layer each) or of image-level label numbers (all digits)
//   category.csv   name,first,last,count,frequency; its row order is the category order
//   label.csv      number,name,category,frequency,coverage,syns; one global numbering, 0 unlabelled
//   c_<cat>.csv    code,number,name,frequency,coverage: the category's labels and their coverage
//   PNGs           label = R + 256·G
// The primary category of a label is the selected category where its coverage is largest (ties:
// the later category), as NetDissect-Lite's primary_categories_per_index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace shapebias::tools {

/// One image's labels: pixel-level label layers of sh × sw, and image-level labels.
struct probe_labels {
  std::size_t sh = 0, sw = 0;
  std::vector<std::vector<std::int32_t>> layers;
  std::vector<std::int32_t> image_labels;
};

class probe_set {
 public:
  /// Reads the CSV files of a Broden-format folder, keeping `categories` (empty: all, in
  /// category.csv order). Throws io_error naming the file, line and problem.
  static probe_set open(const std::string& dir, const std::vector<std::string>& categories = {});

  const std::string& path() const noexcept { return dir_; }
  /// Rows of index.csv (every image, with or without labels in the selected categories).
  std::size_t size() const noexcept { return rows_.size(); }
  /// True when row i has a label (layer or image-level) in a selected category. NetDissect-Lite
  /// leaves the other images out; so does `dissect`.
  bool has_labels(std::size_t i) const;
  std::string image_path(std::size_t i) const;
  std::size_t seg_height(std::size_t i) const { return rows_.at(i).sh; }
  std::size_t seg_width(std::size_t i) const { return rows_.at(i).sw; }
  /// Decodes row i's segmentations. Throws io_error naming the PNG for a missing or undecodable
  /// file, a size other than index.csv's sh × sw, or a label outside [0, labels()).
  probe_labels labels_of(std::size_t i) const;

  /// The selected categories, in category.csv order.
  const std::vector<std::string>& categories() const noexcept { return categories_; }
  /// Label names by global number (0: "-"); labels() = largest number + 1.
  const std::vector<std::string>& label_names() const noexcept { return names_; }
  std::size_t labels() const noexcept { return names_.size(); }
  /// Primary category (index into categories()) of every label; entry 0 is 0.
  const std::vector<std::int32_t>& primary() const noexcept { return primary_; }

  /// For provenance: path, sizes, categories, and sha256 of the four kinds of CSV file.
  nlohmann::json describe() const;

 private:
  struct item {
    std::string png;          // relative to images/; empty for an image-level label
    std::int32_t label = 0;   // image-level label
  };
  struct row {
    std::string image;
    std::size_t sh = 0, sw = 0;
    std::vector<item> items;  // of the selected categories
  };
  std::string dir_;
  std::vector<row> rows_;
  std::vector<std::string> categories_, names_;
  std::vector<std::int32_t> primary_;
  nlohmann::json files_;
};

}  // namespace shapebias::tools
