// cmn-dicom-png: writes the 8-bit grey image cmn derives from each DICOM instance (after the grey-level policy
// of cmn/preprocessing/dicom.h, before resizing) as a PNG, to look at and to compare with other viewers.
//   cmn-dicom-png FILE... --output-dir DIR [--verbose]
// Output: DIR/<file name>.png, where a trailing .dcm / .dicom (any case) is replaced and any other name gets .png
// appended (DICOM files are often named by UID, whose last component is no extension). Exit status 0 only if
// every file converted; one line on stderr per file that did not.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cmn/preprocessing/dicom.h"

namespace {

namespace fs = std::filesystem;

std::string png_name(const fs::path& input) {
  std::string name = input.filename().string();
  std::string extension = input.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (extension == ".dcm" || extension == ".dicom") name = input.stem().string();
  return name + ".png";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-dicom-png: the 8-bit grey image cmn derives from each DICOM instance, as PNG"};
  std::vector<std::string> files;
  std::string output_dir;
  bool verbose = false;
  cmn::preprocessing::DicomReadOptions options;
  app.add_option("files", files, "DICOM files (Part 10 or bare datasets)")->required();
  app.add_option("--output-dir", output_dir, "directory for the PNG files (created if missing)")->required();
  app.add_option("--max-pixels", options.max_pixels, "refuse images with more pixels than this")
      ->capture_default_str();
  app.add_flag("--verbose", verbose, "print, per file, the grey-level rules applied (stdout)");
  CLI11_PARSE(app, argc, argv);

  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) {
    std::cerr << "cmn-dicom-png: cannot create '" << output_dir << "': " << ec.message() << "\n";
    return 1;
  }
  int failures = 0;
  std::set<std::string> written;
  for (const std::string& file : files) {
    const std::string name = png_name(file);
    const fs::path target = fs::path(output_dir) / name;
    if (!written.insert(name).second) {
      std::cerr << file << ": output name '" << name << "' already used by an earlier input; skipped\n";
      ++failures;
      continue;
    }
    auto image = cmn::preprocessing::read_dicom_file(file, options);
    if (!image.ok()) {
      std::cerr << image.status().message() << "\n";
      ++failures;
      continue;
    }
    bool ok = false;
    try {
      ok = cv::imwrite(target.string(), image->grey8);
    } catch (const cv::Exception& e) {
      ok = false;
    }
    if (!ok) {
      std::cerr << file << ": cannot write '" << target.string() << "'\n";
      ++failures;
      continue;
    }
    if (verbose) {
      std::cout << file << " -> " << target.string() << " (" << image->grey8.cols << " x " << image->grey8.rows
                << "; " << image->grey_levels << "; view " << cmn::preprocessing::view_name(image->info.view)
                << ": " << image->info.view_evidence << ")\n";
    }
  }
  return failures == 0 ? 0 : 1;
}
