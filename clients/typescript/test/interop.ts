// Interop check of the TypeScript client against a running gateway (tests/integration/test_ts_client.py
// starts the gateway and runs this): Analyze, AnalyzeStream and a KServe v2 ModelInfer, with API key auth.
// Usage: node dist/test/interop.js CONFIG.json, where the config is {"address", "apiKey", "images": [paths]}.
// Checks what must hold whatever the model says and prints the answers as JSON on stdout, for the test to
// compare with the Python client's.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  Code,
  ConnectError,
  create,
  createHemascopeClient,
  imageInferRequest,
  outputTensors,
  readImageInferences,
  AnalyzeRequestSchema,
  AnalyzeStreamRequestSchema,
  type AnalyzeResponse,
  type AnalyzeStreamRequest,
  type HemascopeClient,
} from "../src/index.js";

interface Config {
  address: string;
  apiKey: string;
  images: string[];
}

const NOT_AN_IMAGE = new TextEncoder().encode("\x89PNG\r\n\x1a\n not really a png");
const TOLERANCE = 1e-5;

async function codeOf(call: () => Promise<unknown>): Promise<Code | "OK"> {
  try {
    await call();
    return "OK";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

function checkReport(report: AnalyzeResponse, classes: string[], imageId: string): void {
  assert.equal(report.imageId, imageId);
  assert.match(report.contentHash, /^[0-9a-f]{64}$/);
  const classification = report.classification;
  assert.ok(classification !== undefined, `${imageId}: no classification (${JSON.stringify(report.parts)})`);
  assert.ok(classification.predictions.length > 0);
  for (const prediction of classification.predictions) {
    assert.deepEqual(
      prediction.probabilities.map((p) => p.className),
      classes,
      `${prediction.model}: class names`,
    );
    const total = prediction.probabilities.reduce((sum, p) => sum + p.probability, 0);
    assert.ok(Math.abs(total - 1) < TOLERANCE, `${prediction.model}: probabilities sum to ${total}`);
    assert.ok(classes.includes(prediction.label));
  }
  assert.ok(classes.includes(classification.consensusLabel));
  for (const part of report.parts) {
    assert.equal(part.code, 0, `${imageId}: part ${part.part} failed: ${part.message}`);
  }
}

function summary(report: AnalyzeResponse): Record<string, unknown> {
  const classification = report.classification!;
  return {
    image_id: report.imageId,
    content_hash: report.contentHash,
    consensus_label: classification.consensusLabel,
    consensus_probability: classification.consensusProbability,
    malignant_probability: classification.malignantProbability,
    models: Object.fromEntries(
      classification.predictions.map((p) => [
        p.model,
        Object.fromEntries(p.probabilities.map((c) => [c.className, c.probability])),
      ]),
    ),
  };
}

async function run(client: HemascopeClient, anonymous: HemascopeClient, config: Config): Promise<unknown> {
  const images = config.images.map((path) => new Uint8Array(readFileSync(path)));

  // Without the key every API is refused.
  assert.equal(await codeOf(() => anonymous.analysis.getCapabilities({})), Code.Unauthenticated);
  assert.equal(await codeOf(() => anonymous.kserve.modelInfer(imageInferRequest(images))), Code.Unauthenticated);

  const capabilities = await client.analysis.getCapabilities({});
  const classes = capabilities.classes;
  assert.ok(classes.length > 1);

  // Analyze, one image at a time.
  const reports: AnalyzeResponse[] = [];
  for (const [index, data] of images.entries()) {
    const request = create(AnalyzeRequestSchema, { image: { data, imageId: `cell-${index}` } });
    const report = await client.analysis.analyze(request);
    checkReport(report, classes, `cell-${index}`);
    reports.push(report);
  }
  assert.equal(
    await codeOf(() => client.analysis.analyze({ image: { data: NOT_AN_IMAGE } })),
    Code.InvalidArgument,
  );

  // AnalyzeStream: every image twice and one unreadable image; every request answered once, each answer
  // about its own image, and a bad request answered with its own error while the stream goes on.
  const streamed: AnalyzeStreamRequest[] = [];
  for (let round = 0; round < 2; round++) {
    images.forEach((data, index) => {
      streamed.push(
        create(AnalyzeStreamRequestSchema, {
          requestId: `r${round}-${index}`,
          request: { image: { data, imageId: `cell-${index}` } },
        }),
      );
    });
  }
  streamed.push(create(AnalyzeStreamRequestSchema, { requestId: "bad", request: { image: { data: NOT_AN_IMAGE } } }));
  async function* requests(): AsyncGenerator<AnalyzeStreamRequest> {
    yield* streamed;
  }
  const arrivals: string[] = [];
  let streamError: { code: string; reason: string } | undefined;
  for await (const answer of client.analysis.analyzeStream(requests())) {
    arrivals.push(answer.requestId);
    if (answer.requestId === "bad") {
      assert.equal(answer.outcome.case, "error");
      streamError = { code: String(answer.outcome.value?.code), reason: answer.outcome.value?.reason ?? "" };
      continue;
    }
    if (answer.outcome.case !== "result") {
      assert.fail(`${answer.requestId}: no result (${answer.outcome.value?.message ?? "empty answer"})`);
    }
    const index = Number(answer.requestId.split("-")[1]);
    const result = answer.outcome.value;
    checkReport(result, classes, `cell-${index}`);
    assert.equal(result.contentHash, reports[index]!.contentHash);
    assert.equal(result.classification!.consensusLabel, reports[index]!.classification!.consensusLabel);
  }
  assert.equal(arrivals.length, streamed.length);
  assert.deepEqual([...arrivals].sort(), streamed.map((item) => item.requestId).sort());

  // KServe v2: health, the model's metadata, then one batch of every image.
  assert.equal((await client.kserve.serverReady({})).ready, true);
  assert.equal((await client.kserve.modelReady({ name: "hemascope" })).ready, true);
  const metadata = await client.kserve.modelMetadata({ name: "hemascope" });
  assert.deepEqual(
    metadata.inputs.map((t) => [t.name, t.datatype, t.shape.map(Number)]),
    [["IMAGE", "BYTES", [-1]]],
  );
  const probabilitiesSpec = metadata.outputs.find((t) => t.name === "PROBABILITIES");
  assert.deepEqual(probabilitiesSpec?.shape.map(Number), [-1, classes.length]);
  const response = await client.kserve.modelInfer(imageInferRequest(images, { id: "batch-1" }));
  assert.equal(response.modelName, "hemascope");
  assert.equal(response.id, "batch-1");
  const tensors = outputTensors(response);
  const shapes = Object.fromEntries([...tensors].map(([name, tensor]) => [name, tensor.shape]));
  assert.deepEqual(shapes["PROBABILITIES"], [images.length, classes.length]);
  for (const name of ["LABEL", "MALIGNANT_PROBABILITY", "REFER", "CONTENT_HASH"]) {
    assert.deepEqual(shapes[name], [images.length], name);
  }
  const rows = readImageInferences(response);
  rows.forEach((row, index) => {
    assert.deepEqual(Object.keys(row.probabilities), classes);
    const total = Object.values(row.probabilities).reduce((sum, value) => sum + value, 0);
    assert.ok(Math.abs(total - 1) < TOLERANCE, `KServe row ${index}: probabilities sum to ${total}`);
    assert.equal(row.contentHash, reports[index]!.contentHash);
    assert.equal(row.label, reports[index]!.classification!.consensusLabel);
  });

  return {
    classes,
    analyze: reports.map(summary),
    stream: { arrivals, error: streamError },
    kserve: {
      metadata_versions: metadata.versions,
      model_version: response.modelVersion,
      shapes,
      datatypes: Object.fromEntries([...tensors].map(([name, tensor]) => [name, tensor.datatype])),
      rows,
    },
  };
}

async function main(): Promise<void> {
  const configPath = process.argv[2];
  if (configPath === undefined) throw new Error("usage: interop.js CONFIG.json");
  const config = JSON.parse(readFileSync(configPath, "utf8")) as Config;
  const client = createHemascopeClient({ address: config.address, apiKey: config.apiKey, timeoutMs: 120_000 });
  const anonymous = createHemascopeClient({ address: config.address, timeoutMs: 120_000 });
  try {
    const result = await run(client, anonymous, config);
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    client.close();
    anonymous.close();
  }
}

await main();
