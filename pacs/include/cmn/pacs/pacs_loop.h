#pragma once
// cmn-pacs: the PACS loop. Watches an Orthanc server's change feed for stable studies, sends each study's
// instances to a cmn-server (GenerateReport with output.dicom_sr) and stores the returned SR back into the same
// study, by DICOM C-STORE or DICOMweb STOW-RS (pipeline/dicom_send.h). With a FHIR URL it then POSTs the
// report as a FHIR R4 DiagnosticReport (pipeline/fhir_report.h) to that FHIR server.
//
//   Orthanc REST  GET /changes?since=N&limit=M   ChangeType "StableStudy" -> the study's Orthanc ID
//                 GET /studies/{id}               MainDicomTags.StudyInstanceUID
//                 GET /studies/{id}/instances     the instances' Orthanc IDs
//                 GET /instances/{id}/file        the Part 10 bytes
//
// Guarantees:
// - Nothing lost: the change cursor and every study not yet reported are in the state file (JSON, written
//   atomically: temp file, fsync, rename, fsync of the directory) before the cursor moves past them. A study that
//   fails is retried with exponential back-off (retry_initial_s doubling to retry_max_s) up to max_attempts, then
//   kept in `failed` and logged as an ERROR; a restart continues from the state file. Failures that waiting
//   cannot mend (the server finds no usable image: INVALID_ARGUMENT; the PACS refuses the SR; the study was
//   deleted) go to `failed` at once.
//   A failed study that becomes stable again (new instances arrived) gets a fresh set of attempts.
// - Orthanc restarts: a study that was still settling when Orthanc stopped is never announced stable again;
//   cmn-pacs remembers new studies (NewStudy) until they are announced and asks Orthanc about the rest.
// - Never twice: a study is reported once per (StudyInstanceUID, model version) — the key is kept in `done`
//   and checked before any work, so the SR's own arrival (which makes the study stable again) and restarts
//   do not make a second SR.
// - FHIR (fhir.base_url set): a study is done when its SR is stored AND its DiagnosticReport is accepted (HTTP
//   200/201). A failed POST is retried like a failed store; the retry finds the SR already in the study, stores no
//   second one, and POSTs again (with If-None-Exist on the report's identifier, so a server with conditional
//   create keeps one copy when an earlier POST did arrive).
// - No patient identifiers in logs: studies are named by Orthanc ID and a hash of the StudyInstanceUID.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/pipeline/dicom_send.h"
#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/fhir_report.h"

namespace cmn::pacs {

struct PacsOptions {
  std::string orthanc_url = "http://127.0.0.1:8042";  // Orthanc REST base URL (http only)
  std::string orthanc_user, orthanc_password;          // HTTP basic auth for Orthanc, when user is not empty
  std::string server = "127.0.0.1:50051";              // cmn-server gRPC address (plaintext)
  // Instead of a cmn-server: run this model bundle inside cmn-pacs (same pipeline, same report), with `threads`
  // LibTorch threads (0 = one per core) and `sr` for the SR's UID root / series description.
  std::string bundle;
  int threads = 0;
  pipeline::SrOptions sr;
  std::string server_token;                            // bearer token for cmn-server, when not empty
  double server_deadline_s = 300;                      // GenerateReport deadline per study
  std::string state_file = "cmn-pacs-state.json";      // cursor, done keys, pending and failed studies
  double poll_interval_s = 1.0;                        // pause between change-feed polls when idle
  int changes_batch = 100;                             // changes fetched per poll
  // How the SR goes back: "dicom" (C-STORE to `dicom`), "stow" (STOW-RS to `stow`).
  std::string store = "dicom";
  pipeline::DicomPeer dicom;                           // Orthanc's DICOM port, its AE title and ours
  pipeline::StowTarget stow;                           // e.g. http://127.0.0.1:8042/dicom-web
  // FHIR server base URL (e.g. http://127.0.0.1:8080/fhir): "" = no FHIR. The DiagnosticReport is POSTed after
  // the SR is stored, with store_retry inside one attempt.
  pipeline::FhirTarget fhir;
  // Study-level retries (fetch, report or store failed): attempts in all, then the study is `failed`.
  int max_attempts = 8;
  double retry_initial_s = 2;
  double retry_max_s = 300;
  // Retries inside one store attempt (a PACS briefly busy); study-level retries come on top.
  pipeline::RetryPolicy store_retry{2, 0.5, 2};
};

struct PendingStudy {
  std::string orthanc_id;
  int attempts = 0;            // failed attempts so far
  double next_try_unix = 0;    // not before this time (seconds since the epoch)
  std::string last_error;      // without patient data (our own messages and the server's)
};

struct PacsState {
  int64_t last_change = 0;                    // Orthanc change Seq handled last
  std::set<std::string> done;                 // "<StudyInstanceUID>|<model version>"
  std::map<std::string, PendingStudy> pending;  // by Orthanc study ID
  std::map<std::string, PendingStudy> failed;   // gave up after max_attempts
  // Orthanc IDs of studies seen new (NewStudy) but not yet announced stable. Orthanc tracks "not yet stable" in
  // memory only: a study still settling when Orthanc stops never gets its StableStudy change after the restart,
  // so each pass asks Orthanc about these and takes one it now calls stable as if it had been announced.
  std::set<std::string> settling;
};

// Reads the state file; a missing file is a fresh state, a corrupt one an error naming the file.
absl::StatusOr<PacsState> load_state(const std::string& path);
// Writes it atomically (temp + fsync + rename + directory fsync).
absl::Status save_state(const std::string& path, const PacsState& state);

// A short, stable, non-identifying name for a StudyInstanceUID in logs: "study#" + 12 hex of its SHA-256.
std::string study_log_name(const std::string& study_instance_uid);

// What one pass did (tests and logs).
struct PassResult {
  int new_stable_studies = 0;   // StableStudy changes seen
  int reported = 0;             // studies done (SR stored, and the FHIR report posted when configured)
  int fhir_posted = 0;          // DiagnosticReports accepted by the FHIR server
  int skipped_done = 0;         // already reported for this model version
  int failed_attempts = 0;      // attempts that failed (will be retried or gave up)
};

class PacsLoop {
 public:
  // Connects lazily; the model version comes from the server's GetModelInfo on first use.
  explicit PacsLoop(PacsOptions options);
  ~PacsLoop();
  PacsLoop(const PacsLoop&) = delete;
  PacsLoop& operator=(const PacsLoop&) = delete;

  // Loads the state file. Must succeed before run_once.
  absl::Status init();
  // Reads new changes, then works on every pending study that is due. Saves the state after each study.
  // An error means Orthanc's change feed or the state file could not be used (the pass is retried later).
  absl::StatusOr<PassResult> run_once();
  // run_once until `stop` is set, sleeping poll_interval_s when idle.
  void run(const std::atomic<bool>& stop);

  const PacsState& state() const { return state_; }

 private:
  struct Impl;
  absl::Status process_study(const std::string& orthanc_id, PassResult* result);
  PacsOptions options_;
  PacsState state_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cmn::pacs
