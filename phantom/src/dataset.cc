// Phantom datasets on disk: PNG + annotation.json + manifest, and DICOM through DCMTK (the only file of
// cmn_phantom that includes it, as dcmtk_bridge.cc is for cmn_preprocessing).
#include "cmn/phantom/dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>

#include <unistd.h>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcrlerp.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>
#include <dcmtk/oflog/oflog.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cmn/common/durable_write.h"

namespace cmn::phantom {
namespace {

namespace fs = std::filesystem;

void register_encoders() {
  static std::once_flag once;
  std::call_once(once, [] {
    // The encoders' informational lines ("ignoring possible modality transform") are noise for a generator.
    for (const char* logger : {"dcmtk.dcmdata", "dcmtk.dcmjpeg", "dcmtk.dcmjpls", "dcmtk.dcmimgle"}) {
      OFLog::getLogger(logger).setLogLevel(OFLogger::WARN_LOG_LEVEL);
    }
    DcmRLEEncoderRegistration::registerCodecs();
    DJEncoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
  });
}

E_TransferSyntax dcmtk_syntax(TransferSyntax t) {
  switch (t) {
    case TransferSyntax::kExplicitLittle: return EXS_LittleEndianExplicit;
    case TransferSyntax::kImplicitLittle: return EXS_LittleEndianImplicit;
    case TransferSyntax::kRleLossless: return EXS_RLELossless;
    case TransferSyntax::kJpegLossless: return EXS_JPEGProcess14SV1;
    case TransferSyntax::kJpegLsLossless: return EXS_JPEGLSLossless;
  }
  return EXS_LittleEndianExplicit;
}

// splitmix64: study seeds and UIDs from the dataset seed without touching any shared RNG.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// "2.25.<integer>" UIDs (ISO/IEC 9834-8 form), derived from the study seed so reruns give the same files.
std::string uid(uint64_t a, uint64_t b) { return "2.25." + std::to_string(mix(a)) + std::to_string(mix(b) % 100000000ULL); }

std::string encode_png(const cv::Mat& image, const std::string& path) {
  std::vector<uchar> buf;
  if (!cv::imencode(".png", image, buf, {cv::IMWRITE_PNG_COMPRESSION, 6})) {
    throw std::runtime_error("cannot encode PNG for '" + path + "'");
  }
  return std::string(buf.begin(), buf.end());
}

// DCMTK's JPEG-LS encoder pads an odd-length codestream to even length with a byte it leaves uninitialised
// (seen as different bytes after the EOI marker between two runs in one process). The standard wants that pad
// to be zero; set it in the written file, so that the same seed gives the same bytes. The pixel data is the
// last element, so the file ends with: FF D9 <pad> | FE FF DD E0 00 00 00 00 (sequence delimitation item).
void zero_codestream_padding(const std::string& path) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  if (!f) throw std::runtime_error("cannot reopen '" + path + "'");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 11) return;
  unsigned char tail[11];
  f.seekg(size - 11);
  f.read(reinterpret_cast<char*>(tail), 11);
  const unsigned char delimiter[8] = {0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0};
  if (f && tail[0] == 0xFF && tail[1] == 0xD9 && std::equal(delimiter, delimiter + 8, tail + 3) && tail[2] != 0) {
    f.seekp(size - 9);
    f.put(0);
  }
  if (!f) throw std::runtime_error("cannot patch '" + path + "'");
}


}  // namespace

const char* transfer_syntax_name(TransferSyntax t) {
  switch (t) {
    case TransferSyntax::kExplicitLittle: return "explicit-le";
    case TransferSyntax::kImplicitLittle: return "implicit-le";
    case TransferSyntax::kRleLossless: return "rle";
    case TransferSyntax::kJpegLossless: return "jpeg-lossless";
    case TransferSyntax::kJpegLsLossless: return "jpeg-ls";
  }
  return "?";
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string error = durable::write_file(path, bytes);
  if (!error.empty()) throw std::runtime_error(error);
}

void write_dicom_view(const std::string& path, const cv::Mat& image8, const std::string& view_position,
                      const DicomViewOptions& o, const DicomIdentity& id) {
  if (image8.type() != CV_8UC1 || image8.empty()) throw std::runtime_error("write_dicom_view: '" + path + "' needs an 8-bit grey image");
  if (o.modality != "CR" && o.modality != "DX") throw std::runtime_error("write_dicom_view: modality must be CR or DX, got " + o.modality);
  register_encoders();
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  const bool dx = o.modality == "DX";
  auto put = [&](const DcmTagKey& tag, const std::string& value) {
    if (const OFCondition c = ds->putAndInsertString(tag, value.c_str()); c.bad()) {
      throw std::runtime_error("write_dicom_view: '" + path + "': " + c.text());
    }
  };
  put(DCM_SOPClassUID, dx ? UID_DigitalXRayImageStorageForPresentation : UID_ComputedRadiographyImageStorage);
  put(DCM_SOPInstanceUID, id.sop_uid);
  put(DCM_StudyInstanceUID, id.study_uid);
  put(DCM_SeriesInstanceUID, id.series_uid);
  put(DCM_Modality, o.modality);
  put(DCM_PatientName, "Phantom^" + id.study_id);
  put(DCM_PatientID, id.patient_id);
  put(DCM_StudyID, id.study_id);
  put(DCM_AccessionNumber, id.study_id);
  put(DCM_StudyDate, "20260101");
  put(DCM_StudyDescription, "CHEST 4 VIEWS (PHANTOM)");
  put(DCM_SeriesDescription, "CHEST " + view_position);
  put(DCM_BodyPartExamined, "CHEST");
  put(DCM_ViewPosition, view_position);
  put(DCM_SeriesNumber, std::to_string(id.series_number));
  put(DCM_InstanceNumber, std::to_string(id.instance_number));
  put(DCM_Manufacturer, "cmn-phantom");
  if (dx) {
    put(DCM_PresentationIntentType, "FOR PRESENTATION");
    put(DCM_ImageType, "ORIGINAL\\PRIMARY");
  }
  // 12 bits stored: the 8-bit grey g becomes 16 g + 8, the centre of its bin; MONOCHROME1 stores 4095 - that.
  std::vector<Uint16> words(static_cast<std::size_t>(image8.total()));
  for (int y = 0; y < image8.rows; ++y) {
    const uchar* row = image8.ptr<uchar>(y);
    for (int x = 0; x < image8.cols; ++x) {
      const Uint16 v = static_cast<Uint16>(16 * row[x] + 8);
      words[static_cast<std::size_t>(y) * image8.cols + x] = o.monochrome1 ? static_cast<Uint16>(4095 - v) : v;
    }
  }
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(image8.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(image8.cols));
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  put(DCM_PhotometricInterpretation, o.monochrome1 ? "MONOCHROME1" : "MONOCHROME2");
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 12);
  ds->putAndInsertUint16(DCM_HighBit, 11);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  put(DCM_WindowCenter, "2048");
  put(DCM_WindowWidth, "4096");
  ds->putAndInsertUint16Array(DCM_PixelData, words.data(), static_cast<unsigned long>(words.size()));

  const E_TransferSyntax xfer = dcmtk_syntax(o.syntax);
  if (o.syntax == TransferSyntax::kRleLossless) {
    DcmRLERepresentationParameter p;
    if (OFCondition c = ds->chooseRepresentation(xfer, &p); c.bad()) throw std::runtime_error("RLE encoding of '" + path + "': " + c.text());
  } else if (o.syntax == TransferSyntax::kJpegLossless) {
    DJ_RPLossless p(1, 0);
    if (OFCondition c = ds->chooseRepresentation(xfer, &p); c.bad()) throw std::runtime_error("JPEG encoding of '" + path + "': " + c.text());
  } else if (o.syntax == TransferSyntax::kJpegLsLossless) {
    DJLSRepresentationParameter p(0, OFTrue);
    if (OFCondition c = ds->chooseRepresentation(xfer, &p); c.bad()) throw std::runtime_error("JPEG-LS encoding of '" + path + "': " + c.text());
  }
  if (!ds->canWriteXfer(xfer)) throw std::runtime_error("cannot write '" + path + "' in " + transfer_syntax_name(o.syntax));
  const std::string error = durable::replace_file(path, [&](const std::string& tmp) -> std::string {
    const OFCondition c = file.saveFile(tmp.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0, EWM_createNewMeta);
    if (c.bad()) return "cannot write '" + path + "': " + c.text();
    if (o.syntax == TransferSyntax::kJpegLossless || o.syntax == TransferSyntax::kJpegLsLossless) zero_codestream_padding(tmp);
    return "";
  });
  if (!error.empty()) throw std::runtime_error(error);
}

uint64_t study_seed(uint64_t dataset_seed, int index) { return mix(dataset_seed * 1000003ULL + static_cast<uint64_t>(index)); }

DatasetSummary write_dataset(const std::string& out_dir, const DatasetOptions& o) {
  if (o.studies < 1) throw std::runtime_error("write_dataset: need at least one study");
  std::error_code ec;
  fs::create_directories(fs::path(out_dir) / "images", ec);
  if (ec) throw std::runtime_error("cannot create '" + out_dir + "/images': " + ec.message());
  const int n_test = static_cast<int>(o.studies * o.test_fraction + 0.5);
  const int n_val = static_cast<int>(o.studies * o.val_fraction + 0.5);
  const int n_train = o.studies - n_val - n_test;
  if (n_train < 1) throw std::runtime_error("write_dataset: val_fraction + test_fraction leave no training study");

  nlohmann::ordered_json annotation = {{"train", nlohmann::json::array()}, {"val", nlohmann::json::array()},
                                       {"test", nlohmann::json::array()}};
  std::string manifest;
  DatasetSummary summary;
  ReportOptions report_options;
  report_options.bank = o.bank;
  for (int i = 0; i < o.studies; ++i) {
    const std::string split = i < n_train ? "train" : i < n_train + n_val ? "val" : "test";
    (split == "train" ? summary.train : split == "val" ? summary.val : summary.test)++;
    char id_buf[32];
    std::snprintf(id_buf, sizeof id_buf, "phantom_%06d", i);
    const std::string id = id_buf;
    const uint64_t seed = study_seed(o.seed, i);
    const StudySpec spec = draw_study(seed, o.draw);
    const RenderedStudy study = render_study(spec, o.render);
    const std::string report = write_report(spec, seed, report_options);
    for (int f = 0; f < kNumFindings; ++f) summary.positives[static_cast<std::size_t>(f)] += spec.findings[static_cast<std::size_t>(f)];
    summary.normal += spec.normal();

    nlohmann::ordered_json entry = {{"id", id}, {"report", report}, {"image_path", nlohmann::json::array()}, {"split", split}};
    nlohmann::ordered_json views = nlohmann::json::array();
    const std::string study_uid = uid(seed, 1);
    for (int v = 0; v < kViews; ++v) {
      nlohmann::ordered_json view = {{"position", study.views[v].view_position}};
      const std::string rel_png = id + "/" + std::to_string(v) + ".png";
      entry["image_path"].push_back(rel_png);
      if (o.png) {
        fs::create_directories(fs::path(out_dir) / "images" / id, ec);
        const std::string path = (fs::path(out_dir) / "images" / rel_png).string();
        write_file_atomic(path, encode_png(study.views[v].image, path));
        view["png"] = "images/" + rel_png;
      }
      if (o.dicom) {
        fs::create_directories(fs::path(out_dir) / "dicom" / id, ec);
        DicomViewOptions d;
        // Vary what a PACS would send: CR and DX, both photometric interpretations, five transfer syntaxes.
        d.modality = (i + v) % 2 == 0 ? "CR" : "DX";
        d.monochrome1 = ((i / 2) + v) % 2 == 1;
        d.syntax = static_cast<TransferSyntax>((i + 2 * v) % 5);
        DicomIdentity ident;
        ident.study_uid = study_uid;
        ident.series_uid = uid(seed, 10 + static_cast<uint64_t>(v));
        ident.sop_uid = uid(seed, 100 + static_cast<uint64_t>(v));
        ident.patient_id = "PHANTOM-" + std::to_string(i);
        ident.study_id = id.substr(8);
        ident.series_number = v + 1;
        ident.instance_number = v + 1;
        const std::string rel = "dicom/" + id + "/" + std::to_string(v) + ".dcm";
        write_dicom_view((fs::path(out_dir) / rel).string(), study.views[v].image, study.views[v].view_position, d, ident);
        view["dicom"] = rel;
        view["modality"] = d.modality;
        view["photometric"] = d.monochrome1 ? "MONOCHROME1" : "MONOCHROME2";
        view["transfer_syntax"] = transfer_syntax_name(d.syntax);
      }
      views.push_back(view);
    }
    annotation[split].push_back(entry);

    nlohmann::ordered_json findings = nlohmann::json::object();
    for (int f = 0; f < kNumFindings; ++f) {
      findings[metrics::finding_name(static_cast<Finding>(f))] = spec.findings[static_cast<std::size_t>(f)];
    }
    nlohmann::ordered_json line = {{"id", id},
                                   {"split", split},
                                   {"seed", seed},
                                   {"findings", findings},
                                   {"ctr", spec.ctr},
                                   {"measured_ctr", study.measured_ctr},
                                   {"effusion_side", side_name(spec.effusion_side)},
                                   {"pneumothorax_side", side_name(spec.pneumothorax_side)},
                                   {"consolidation_zone", zone_name(spec.consolidation_zone)},
                                   {"granuloma_zone", zone_name(spec.granuloma_zone)},
                                   {"study_instance_uid", study_uid},
                                   {"report", report},
                                   {"views", views}};
    manifest += line.dump() + "\n";
  }
  write_file_atomic((fs::path(out_dir) / "annotation.json").string(), annotation.dump(1) + "\n");
  write_file_atomic((fs::path(out_dir) / "manifest.jsonl").string(), manifest);
  return summary;
}

}  // namespace cmn::phantom
