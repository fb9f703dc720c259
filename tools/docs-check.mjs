#!/usr/bin/env node
// Check what `natstopo asyncapi` and `natstopo graph` write with the official parsers
// (installed from the root package-lock.json by `make node-deps`) and print the
// diagnostics as one JSON object:
//   {"valid": bool, "errors": N, "warnings": N, "diagnostics": [{severity, code, message, path, line}]}
//
// Usage: node tools/docs-check.mjs asyncapi FILE...   (@asyncapi/parser: schema and Spectral rules)
//        node tools/docs-check.mjs mermaid FILE...    (mermaid.parse, as a renderer would parse it)
// FILE `-` reads standard input. With several files the output is a JSON array of reports, in
// order (one process: the parsers load once). Exit: 0 all valid, 1 one is invalid, 3 the
// check could not run.
import { readFileSync } from "node:fs";

const SEVERITY = ["error", "warning", "info", "hint"];

async function checkAsyncapi(text) {
  const { Parser } = await import("@asyncapi/parser");
  const { document, diagnostics } = await new Parser().parse(text);
  const out = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.map(String),
    line: d.range ? d.range.start.line + 1 : null,
  }));
  const errors = out.filter((d) => d.severity === "error").length;
  return {
    valid: document !== undefined && errors === 0,
    errors,
    warnings: out.filter((d) => d.severity === "warning").length,
    diagnostics: out,
  };
}

async function checkMermaid(text) {
  // Mermaid sanitises labels with DOMPurify, which needs a DOM: give it jsdom's.
  const { JSDOM } = await import("jsdom");
  const dom = new JSDOM("<!doctype html><html><body></body></html>");
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  const { default: mermaid } = await import("mermaid");
  try {
    const result = await mermaid.parse(text);
    return {
      valid: true,
      errors: 0,
      warnings: 0,
      diagnostics: [],
      diagram_type: result.diagramType,
    };
  } catch (err) {
    const line = /on line (\d+)/.exec(err.message);
    return {
      valid: false,
      errors: 1,
      warnings: 0,
      diagnostics: [
        {
          severity: "error",
          code: "mermaid-parse",
          message: err.message,
          path: [],
          line: line ? Number(line[1]) : null,
        },
      ],
    };
  }
}

const CHECKS = { asyncapi: checkAsyncapi, mermaid: checkMermaid };

async function main() {
  const [kind, ...files] = process.argv.slice(2);
  if (!CHECKS[kind] || files.length === 0) {
    process.stderr.write("usage: docs-check.mjs asyncapi|mermaid FILE|- [FILE...]\n");
    return 3;
  }
  const reports = [];
  for (const file of files) {
    const text = readFileSync(file === "-" ? 0 : file, "utf8");
    try {
      reports.push(await CHECKS[kind](text));
    } catch (err) {
      if (err && err.code === "ERR_MODULE_NOT_FOUND") {
        process.stderr.write(`docs-check: ${err.message} (run: make node-deps)\n`);
        return 3;
      }
      throw err;
    }
  }
  const out = files.length === 1 ? reports[0] : reports;
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
  return reports.every((r) => r.valid) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`docs-check: ${err && err.stack ? err.stack : err}\n`);
    process.exit(3);
  },
);
