// cmn-generate-request-fuzzer: any bytes as a serialized cmn.v1.GenerateReportRequest, taken as far as
// cmn-server takes a request before the engine: the protobuf parse gRPC does, the instance count limit, and
// ReportServiceImpl::preprocess's study assembly (every instance's DICOM bytes -> view slots, skipped
// instances, model inputs; preprocessing::assemble_study). Must give a study or an error status; a study's
// images must be the model input size.
//
// What is not linked, and why: ReportServiceImpl itself (auth, resolve_decoding, the engine admission) lives
// in cmn_server, which pulls the whole model/engine/pipeline chain (some 60 translation units, most with
// LibTorch's headers, at about a minute each under clang on two cores). The options below are what the
// service derives from the untrained demo bundle (views 2, CR/DX/DR) and the default `limits:`
// (server/config.h), except max_pixels, capped as in the DICOM fuzzer so that one input cannot decode
// 50 megapixels within the 2 GB RSS limit.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cmn/preprocessing/dicom.h"
#include "cmn/v1/report_service.pb.h"

namespace {

constexpr int kMaxInstances = 16;  // LimitsOptions::max_instances default

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cmn::v1::GenerateReportRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC answers INTERNAL/INVALID_ARGUMENT
  if (request.instances_size() == 0 || request.instances_size() > kMaxInstances) return 0;  // refused up front

  std::vector<cmn::preprocessing::InstanceInput> inputs;
  inputs.reserve(static_cast<size_t>(request.instances_size()));
  for (int i = 0; i < request.instances_size(); ++i) {
    inputs.push_back({"instance[" + std::to_string(i) + "]", request.instances(i).data()});
  }
  cmn::preprocessing::StudyOptions options;
  options.views = 2;
  options.read.max_pixels = 16'000'000;
  options.read.max_dimension = 16384;
  auto study = cmn::preprocessing::assemble_study(inputs, options);
  if (study.ok()) {
    const size_t want = static_cast<size_t>(3 * options.image.size * options.image.size);
    if (study->images.size() != static_cast<size_t>(options.views)) __builtin_trap();
    for (const auto& image : study->images) {
      if (image.data.size() != want) __builtin_trap();
    }
  }
  return 0;
}
