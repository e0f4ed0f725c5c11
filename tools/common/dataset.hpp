// SPDX-License-Identifier: MIT
// Data sets of labelled images: Fashion-MNIST/MNIST IDX files, image folders (one subfolder per
// class, ordered as torchvision's ImageFolder orders them) and list files of "path label" lines.
// Images are decoded here (libjpeg-turbo, libpng); resizing lives in the LibTorch plugin, its
// geometry (preprocessed_view) here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/plugin.hpp"

namespace shapebias::tools {

/// An 8-bit image, row-major [height, width, channels].
struct image {
  int height = 0, width = 0, channels = 0;
  std::vector<std::uint8_t> pixels;
};

/// Decodes a JPEG or PNG file (recognised by its first bytes, not its name) to RGB. Throws
/// io_error naming the file when it is missing, of another format, or does not decode.
image decode_image(const std::string& path);

/// True for the file names torchvision's ImageFolder reads (its IMG_EXTENSIONS, any case).
bool torchvision_image_name(const std::filesystem::path& p);

/// Writes an 8-bit image (1 or 3 channels) as PNG. Throws io_error naming the file.
void write_png(const std::string& path, const image& img);

/// Converts between 1 (luma, PIL's ITU-R 601-2 integer formula) and 3 (replicated) channels.
image convert_channels(image img, int channels);

/// A dataset variant (paper-spec §2.2), applied to each preprocessed image in [0,1].
struct transform_spec {
  enum class kind { none, gray, scramble, edges, silhouette } what = kind::none;
  int grid = 2;                                    // scramble
  double sigma = 0.4, low = 0.35, high = 0.9;      // edges (Canny on [0,1] grayscale)
  double threshold = 0.05;                         // silhouette by thresholding
  std::string masks;                               // silhouette from segmentation PNGs
  /// Parses "none", "gray", "scramble:G", "edges[:S,L,H]", "silhouette[:T]", "silhouette:masks=DIR".
  /// Throws usage_error naming the option and what is wrong.
  static transform_spec parse(const std::string& s);
  nlohmann::json to_json() const;
};

/// The numbers of a comma-separated list; `bad` receives the first token that is not a number
/// (and the numbers before it are returned).
std::vector<double> number_list(const std::string& s, std::string& bad);

/// Resolved preprocessing: what is applied to every image, recorded in provenance.
struct preprocessing {
  int channels = 0;  // output channels
  int resize = 0;    // shorter side; 0 none
  int crop = 0;      // centre crop; 0 none
  std::string normalize = "none";
  std::vector<float> mean, std;
  double noise = 0;  // Gaussian sigma in [0,1] space, before normalisation; 0: none
  std::uint64_t noise_seed = 0;
  bool noise_clip = true;
  transform_spec transform;
  std::uint64_t transform_seed = 212;
  std::string root;  // the data set's path (for silhouette masks named as the images)
  nlohmann::json to_json() const;
};

/// The size torchvision's Resize(int) gives: shorter side = `size`, longer side truncated.
std::pair<int, int> resized_size(int height, int width, int size);

/// Where the resize and centre crop of a preprocessing place the preprocessed image in the source
/// image. In continuous coordinates (pixel edges at integers), preprocessed point (y, x) is resized
/// point (y + top, x + left) and source point ((y + top) · scale_y, (x + left) · scale_x).
struct view_geometry {
  int height = 0, width = 0;                  // the preprocessed image
  int resized_height = 0, resized_width = 0;  // after the resize, before the crop
  int top = 0, left = 0;                      // the crop's corner in the resized image; negative: zero padding
  double scale_y = 1, scale_x = 1;            // source pixels per resized pixel
  double source_y(double y) const { return (y + top) * scale_y; }
  double source_x(double x) const { return (x + left) * scale_x; }
};

/// The view of `p` (its resize and crop; 0: none) on a source image of `height` × `width`, as
/// torchvision's Resize(int) and CenterCrop: the corner is int(round((side - crop) / 2)) (round half
/// to even), or -((crop - side) // 2) where the crop pads a side shorter than itself.
view_geometry preprocessed_view(int height, int width, const preprocessing& p);

/// Resolves --channels/--resize/--crop/--normalize against a data set's native channels.
/// Throws usage_error for a malformed --normalize.
preprocessing resolve_preprocessing(const data_options& o, int native_channels);

/// Reads a file of input ids (whitespace-separated integers; '#' starts a comment) for a data set
/// of `size` inputs. Throws io_error naming the file and line for a malformed, out-of-range or
/// repeated id, or for a file with no ids.
std::vector<std::uint64_t> read_id_list(const std::string& path, std::size_t size);

/// The id selection for provenance: null (no file), or the file's path, the id count, and the
/// sha256 of the ids as read (one per line), so that a pipe given as the file is described too.
nlohmann::json describe_id_list(const std::string& path, const std::vector<std::uint64_t>& ids);

/// A shard of a run's inputs (--shard K/N): those whose input id mod N is K. By id, not by position,
/// so an input falls in the same shard whether it comes from a data set, a store or a stream, in any
/// order, at any batch size or thread count; the N shards cover every input exactly once, and with
/// consecutive ids (a data set, --limit) their sizes differ by at most one.
struct shard {
  std::uint64_t index = 0, count = 1;
  /// "K/N" with 0 <= K < N; "" is the whole (0/1). Throws usage_error naming --shard.
  static shard parse(const std::string& text);
  bool contains(std::int64_t id) const { return static_cast<std::uint64_t>(id) % count == index; }
  bool whole() const { return count == 1; }
  std::string to_string() const { return std::to_string(index) + "/" + std::to_string(count); }
  /// For provenance: null for the whole, else {"index", "count", "rule"}.
  nlohmann::json to_json() const;
};

/// The inputs a run reads from a data set of `size` inputs, in order: the --ids list (or every
/// input), its first `limit` (0: all), then those in the --shard. The shard comes last so that the
/// shards of a run together hold exactly the inputs of the same run unsharded.
struct input_selection {
  std::vector<std::uint64_t> ids;
  nlohmann::json id_list;  // describe_id_list of --ids (null without)
  nlohmann::json shard;    // shard::to_json
};

/// Throws io_error (as read_id_list) for a bad id list, and when the shard selects no input.
input_selection select_inputs(const data_options& d, std::size_t size, std::uint64_t limit = 0);

/// A data set of labelled images, read one image at a time (thread-safe).
class dataset {
 public:
  /// Opens a data set; throws io_error naming the path and the problem.
  static std::unique_ptr<dataset> open(const data_options& o);
  virtual ~dataset() = default;
  virtual std::size_t size() const = 0;
  virtual std::int64_t label(std::size_t i) const = 0;
  /// The number of classes the data set itself declares (0 when it does not: list files).
  virtual std::size_t num_classes() const = 0;
  /// The channels images have as stored (1 for IDX, 3 for decoded images).
  virtual int native_channels() const = 0;
  /// A name for messages: the image's path, or "IDX image 17 of '...'".
  virtual std::string item_name(std::size_t i) const = 0;
  /// The image file's path, or "" when images are not files (IDX).
  virtual std::string item_path(std::size_t) const { return {}; }
  /// Image i as stored (native channels).
  virtual image load(std::size_t i) const = 0;
  /// Format, path, size, classes, and a sha256 of the files (IDX) or of the listing (folders, lists).
  virtual nlohmann::json describe() const = 0;
};

}  // namespace shapebias::tools
