#include "cmn/pipeline/dicom_send.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmnet/scu.h>
#include <dcmtk/oflog/oflog.h>
#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "http_url.h"
#include "absl/strings/str_format.h"

namespace cmn::pipeline {

namespace {

std::string condition_text(const OFCondition& cond) { return cond.text() == nullptr ? "?" : cond.text(); }

void quiet_dcmnet_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* logger : {"dcmtk.dcmdata", "dcmtk.dcmnet"}) {
      OFLog::getLogger(logger).setLogLevel(OFLogger::FATAL_LOG_LEVEL);
    }
  });
}

absl::Status store_once(DcmDataset* dataset, const std::string& sop_class, const std::string& sop_instance,
                        const DicomPeer& peer) {
  const std::string where = absl::StrCat("C-STORE of ", sop_instance, " to ", peer.called_ae, "@", peer.host, ":",
                                         peer.port);
  DcmSCU scu;
  scu.setAETitle(peer.calling_ae.c_str());
  scu.setPeerHostName(peer.host.c_str());
  scu.setPeerPort(static_cast<Uint16>(peer.port));
  scu.setPeerAETitle(peer.called_ae.c_str());
  scu.setConnectionTimeout(peer.connect_timeout_s);
  scu.setACSETimeout(static_cast<Uint32>(peer.acse_timeout_s));
  scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  scu.setDIMSETimeout(static_cast<Uint32>(peer.dimse_timeout_s));
  OFList<OFString> syntaxes;
  syntaxes.push_back(UID_LittleEndianExplicitTransferSyntax);
  syntaxes.push_back(UID_LittleEndianImplicitTransferSyntax);
  scu.addPresentationContext(sop_class.c_str(), syntaxes);
  OFCondition cond = scu.initNetwork();
  if (cond.bad()) return absl::UnavailableError(absl::StrCat(where, ": network setup failed: ", condition_text(cond)));
  cond = scu.negotiateAssociation();
  if (cond.bad()) {
    return absl::UnavailableError(absl::StrCat(where, ": association failed: ", condition_text(cond)));
  }
  const T_ASC_PresentationContextID context = scu.findPresentationContextID(sop_class.c_str(), "");
  if (context == 0) {
    scu.releaseAssociation();
    return absl::FailedPreconditionError(absl::StrCat(where, ": the peer accepts no presentation context for SOP class ",
                                                      sop_class));
  }
  Uint16 response = 0;
  cond = scu.sendSTORERequest(context, "", dataset, response);
  scu.releaseAssociation();
  if (cond.bad()) return absl::UnavailableError(absl::StrCat(where, ": ", condition_text(cond)));
  // 0x0000 success; 0xB000, 0xB007, 0xB006 warnings (stored, with coercion or elements discarded).
  if (response != 0x0000 && (response & 0xF000) != 0xB000) {
    return absl::InternalError(absl::StrCat(where, ": the peer answered failure status 0x",
                                            absl::StrFormat("%04X", response)));
  }
  return absl::OkStatus();
}


}  // namespace

absl::Status c_store(const std::string& part10, const DicomPeer& peer, const RetryPolicy& retry) {
  quiet_dcmnet_once();
  if (peer.port <= 0 || peer.port > 65535) return absl::InvalidArgumentError(absl::StrCat("C-STORE: bad port ", peer.port));
  if (peer.called_ae.empty() || peer.called_ae.size() > 16 || peer.calling_ae.empty() || peer.calling_ae.size() > 16) {
    return absl::InvalidArgumentError("C-STORE: AE titles must have 1 to 16 characters");
  }
  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(part10.data(), static_cast<offile_off_t>(part10.size()));
  stream.setEos();
  file.transferInit();
  const OFCondition read = file.read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
  file.transferEnd();
  if (read.bad()) return absl::InvalidArgumentError(absl::StrCat("C-STORE: not a DICOM instance (", condition_text(read), ")"));
  DcmDataset* dataset = file.getDataset();
  OFString sop_class, sop_instance;
  dataset->findAndGetOFString(DCM_SOPClassUID, sop_class);
  dataset->findAndGetOFString(DCM_SOPInstanceUID, sop_instance);
  if (sop_class.empty() || sop_instance.empty()) {
    return absl::InvalidArgumentError("C-STORE: the instance has no SOPClassUID / SOPInstanceUID");
  }
  return with_retries(retry, [&] { return store_once(dataset, sop_class.c_str(), sop_instance.c_str(), peer); });
}

absl::Status stow_rs(const std::string& part10, const StowTarget& target, const RetryPolicy& retry) {
  std::string origin, path;
  if (!split_url(target.base_url, &origin, &path) || origin.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("STOW-RS: base URL '", target.base_url,
                                                   "' is not an http://host[:port][/path] URL (https is not built in)"));
  }
  // A boundary that cannot occur in the instance.
  std::mt19937_64 engine{std::random_device{}()};
  std::string boundary;
  do {
    boundary = absl::StrFormat("cmn-stow-%016x%016x", engine(), engine());
  } while (part10.find(boundary) != std::string::npos);
  std::string body = absl::StrCat("--", boundary, "\r\nContent-Type: application/dicom\r\n\r\n");
  body.append(part10);
  absl::StrAppend(&body, "\r\n--", boundary, "--\r\n");
  const std::string content_type =
      absl::StrCat("multipart/related; type=\"application/dicom\"; boundary=", boundary);
  const std::string where = absl::StrCat("STOW-RS to ", origin, path, "/studies");

  return with_retries(retry, [&]() -> absl::Status {
    httplib::Client client(origin);
    client.set_connection_timeout(target.timeout_s, 0);
    client.set_read_timeout(target.timeout_s, 0);
    client.set_write_timeout(target.timeout_s, 0);
    if (!target.bearer_token.empty()) client.set_bearer_token_auth(target.bearer_token);
    if (!target.basic_user.empty()) client.set_basic_auth(target.basic_user, target.basic_password);
    httplib::Headers headers = {{"Accept", "application/dicom+json"}};
    auto result = client.Post(path + "/studies", headers, body, content_type);
    if (!result) return absl::UnavailableError(absl::StrCat(where, ": ", httplib::to_string(result.error())));
    if (result->status == 200) return absl::OkStatus();
    const std::string reply = result->body.substr(0, 300);
    if (result->status >= 500) {
      return absl::UnavailableError(absl::StrCat(where, ": HTTP ", result->status, ": ", reply));
    }
    return absl::FailedPreconditionError(absl::StrCat(where, ": HTTP ", result->status, ": ", reply));
  });
}

}  // namespace cmn::pipeline
