#!/usr/bin/env node
// validate.js FILE.json...: validates each FHIR R4 resource with FHIR.js (npm "fhir", pinned in package.json and
// package-lock.json; its structure definitions are FHIR 4.0). Prints every message; exits 1 when any file has
// an error (errorOnUnexpected: a property FHIR does not define is one) or a warning, 2 on bad usage or an
// unreadable / non-JSON file.
//
// One kind of warning is excused: "Code ... not found in value set" at an element whose value set FHIR.js does
// not carry (it says so in an info message at the same location: LOINC / SNOMED CT report, observation and
// finding codes are bound to example or preferred value sets that are not part of FHIR.js). Those codes are
// checked by the C++ tests instead.
'use strict';
const fs = require('fs');
const Fhir = require('fhir').Fhir;

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: validate.js FILE.json...');
  process.exit(2);
}
const fhir = new Fhir();
let failed = false;
for (const file of files) {
  let resource;
  try {
    resource = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    console.error(`${file}: cannot read JSON: ${e.message}`);
    process.exit(2);
  }
  const result = fhir.validate(resource, { errorOnUnexpected: true });
  const messages = result.messages || [];
  const unknownValueSet = new Set(
      messages.filter((m) => m.severity === 'info' && /Value set ".*" could not be found/.test(m.message))
          .map((m) => m.location));
  let problems = 0;
  for (const m of messages) {
    let verdict = '';
    if (m.severity === 'error') {
      ++problems;
    } else if (m.severity === 'warning') {
      if (unknownValueSet.has(m.location) && /not found in value set/.test(m.message)) {
        verdict = ' (excused: FHIR.js does not carry this value set)';
      } else {
        ++problems;
      }
    }
    console.log(`${file}: ${m.severity} ${m.location}: ${m.message}${verdict}`);
  }
  const ok = result.valid && problems === 0;
  if (!ok) failed = true;
  console.log(`${file}: ${ok ? 'valid' : 'INVALID'} (${messages.length} messages, ${problems} problems)`);
}
process.exit(failed ? 1 : 0);
