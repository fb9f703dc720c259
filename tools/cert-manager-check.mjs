#!/usr/bin/env node
// Validate cert-manager objects (Issuer, ClusterIssuer, Certificate of cert-manager.io/v1)
// with @kubernetes-models/cert-manager, whose validators are generated from cert-manager's
// CRD OpenAPI schemas (types, enums, required fields; like the API server, they do not
// refuse unknown fields: the tests check the field names themselves).
// Usage: node tools/cert-manager-check.mjs < objects.json   (a JSON array)
// Prints [{kind, name, valid, error}] as JSON. Exit: 0 all valid, 1 one is invalid, 3 the
// check could not run.
import { readFileSync } from "node:fs";

const MODELS = {
  Certificate: "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate",
  Issuer: "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer",
  ClusterIssuer: "@kubernetes-models/cert-manager/cert-manager.io/v1/ClusterIssuer",
};

try {
  const objects = JSON.parse(readFileSync(0, "utf-8"));
  const out = [];
  for (const obj of objects) {
    const path = MODELS[obj.kind];
    if (obj.apiVersion !== "cert-manager.io/v1" || !path) {
      out.push({ kind: obj.kind, name: obj.metadata?.name, valid: false, error: "not a cert-manager.io/v1 kind checked here" });
      continue;
    }
    const Model = (await import(path))[obj.kind];
    try {
      new Model(obj).validate();
      out.push({ kind: obj.kind, name: obj.metadata?.name, valid: true, error: null });
    } catch (err) {
      out.push({ kind: obj.kind, name: obj.metadata?.name, valid: false, error: String(err.message ?? err) });
    }
  }
  console.log(JSON.stringify(out));
  process.exit(out.every((r) => r.valid) ? 0 : 1);
} catch (err) {
  console.error(String(err?.stack ?? err));
  process.exit(3);
}
