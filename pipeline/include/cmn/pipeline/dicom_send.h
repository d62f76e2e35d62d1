#pragma once
// Sending a DICOM instance (the report SR) back to a PACS, the two standard ways: DICOM C-STORE (dcmnet's
// DcmSCU) and DICOMweb STOW-RS (cpp-httplib). Library `cmn_senders`; no DCMTK or httplib type appears here.
//
// Both retry under a RetryPolicy and never fail silently: the returned status says how many attempts were made
// and why the last one failed. Messages name the peer and the SOP Instance UID, never patient attributes.
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "cmn/pipeline/retry.h"

namespace cmn::pipeline {

// A DICOM Storage SCP (a PACS's DICOM port).
struct DicomPeer {
  std::string host = "127.0.0.1";
  int port = 104;
  std::string calling_ae = "CMN";   // our AE title (the PACS must know it, e.g. Orthanc's DicomModalities)
  std::string called_ae = "ORTHANC";
  int connect_timeout_s = 10;       // TCP connect
  int acse_timeout_s = 30;          // association negotiation / release
  int dimse_timeout_s = 60;         // waiting for the C-STORE response
};

// A DICOMweb server: STOW-RS posts to base_url + "/studies" (e.g. "http://127.0.0.1:8042/dicom-web").
struct StowTarget {
  std::string base_url;
  int timeout_s = 60;               // connect, read and write, each
  std::string bearer_token;         // sent as "Authorization: Bearer ..." when not empty
  std::string basic_user, basic_password;  // HTTP basic auth when basic_user is not empty
};

// C-STORE of one Part 10 instance. Errors: InvalidArgument (bytes not DICOM, bad peer settings; not retried),
// Unavailable (association refused / network / timeout after every attempt), Internal (the SCP answered with a
// failure status after every attempt; the message carries the status code in hex).
absl::Status c_store(const std::string& part10, const DicomPeer& peer, const RetryPolicy& retry = {});

// STOW-RS of one Part 10 instance (multipart/related; type="application/dicom"). Success: HTTP 200 (202 with
// warnings is reported as an error naming the response, since the instance may not be stored). Errors:
// InvalidArgument (bad URL, not retried), Unavailable (network / 5xx after every attempt), FailedPrecondition
// (4xx: the server refused the instance; not retried).
absl::Status stow_rs(const std::string& part10, const StowTarget& target, const RetryPolicy& retry = {});

}  // namespace cmn::pipeline
