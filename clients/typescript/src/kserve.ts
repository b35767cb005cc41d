// Tensors of the gateway's Open Inference Protocol model `hemascope`, packed as Triton packs them: BYTES
// elements with a 4-byte little-endian length prefix, numeric tensors as little-endian arrays, in
// `raw_input_contents` / `raw_output_contents`.
//
// Input IMAGE (BYTES [-1]): encoded images. Outputs, one row per image: LABEL (BYTES), PROBABILITIES
// (FP32 [-1, C], classes in the order of the response's `classes` parameter), MALIGNANT_PROBABILITY (FP32),
// REFER (BOOL), CONTENT_HASH (BYTES).

import { create } from "@bufbuild/protobuf";
import {
  InferParameterSchema,
  ModelInferRequestSchema,
  ModelInferRequest_InferInputTensorSchema,
  type InferParameter,
  type ModelInferRequest,
  type ModelInferResponse,
} from "./gen/grpc_service_pb.js";

export const MODEL_NAME = "hemascope";
export const INPUT_NAME = "IMAGE";

/** `items` as a raw BYTES tensor. */
export function encodeBytesTensor(items: readonly Uint8Array[]): Uint8Array {
  const size = items.reduce((total, item) => total + 4 + item.length, 0);
  const raw = new Uint8Array(size);
  const view = new DataView(raw.buffer);
  let offset = 0;
  for (const item of items) {
    view.setUint32(offset, item.length, true);
    raw.set(item, offset + 4);
    offset += 4 + item.length;
  }
  return raw;
}

/** The elements of a raw BYTES tensor; throws when the data is cut short. */
export function decodeBytesTensor(raw: Uint8Array): Uint8Array[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const items: Uint8Array[] = [];
  let offset = 0;
  while (offset < raw.length) {
    if (offset + 4 > raw.length) throw new Error("truncated BYTES tensor (length prefix cut short)");
    const size = view.getUint32(offset, true);
    offset += 4;
    if (offset + size > raw.length) throw new Error("truncated BYTES tensor (element cut short)");
    items.push(raw.subarray(offset, offset + size));
    offset += size;
  }
  return items;
}

/** A raw FP32 tensor (little-endian). */
export function decodeFp32Tensor(raw: Uint8Array): Float32Array {
  if (raw.length % 4 !== 0) throw new Error(`FP32 tensor of ${raw.length} bytes`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Float32Array.from({ length: raw.length / 4 }, (_, index) => view.getFloat32(index * 4, true));
}

/** A raw BOOL tensor (one byte per element). */
export function decodeBoolTensor(raw: Uint8Array): boolean[] {
  return Array.from(raw, (byte) => byte !== 0);
}

export interface ImageInferOptions {
  /** Classifier models to average over; default: every model. */
  models?: readonly string[];
  /** Malignant threshold in (0, 1]; default 0.5. */
  malignantThreshold?: number;
  /** The caller's request id, echoed in the response. */
  id?: string;
}

/** A ModelInfer request classifying `images` (encoded JPEG, PNG, TIFF or BMP bytes), one row each. */
export function imageInferRequest(images: readonly Uint8Array[], options: ImageInferOptions = {}): ModelInferRequest {
  const parameters: Record<string, InferParameter> = {};
  if (options.models !== undefined && options.models.length > 0) {
    parameters["models"] = create(InferParameterSchema, {
      parameterChoice: { case: "stringParam", value: options.models.join(",") },
    });
  }
  if (options.malignantThreshold !== undefined) {
    parameters["malignant_threshold"] = create(InferParameterSchema, {
      parameterChoice: { case: "doubleParam", value: options.malignantThreshold },
    });
  }
  return create(ModelInferRequestSchema, {
    modelName: MODEL_NAME,
    id: options.id ?? "",
    parameters,
    inputs: [
      create(ModelInferRequest_InferInputTensorSchema, {
        name: INPUT_NAME,
        datatype: "BYTES",
        shape: [BigInt(images.length)],
      }),
    ],
    rawInputContents: [encodeBytesTensor(images)],
  });
}

/** One row of a `hemascope` ModelInfer answer. */
export interface ImageInference {
  label: string;
  /** Class name -> mean calibrated probability over the models. */
  probabilities: Record<string, number>;
  malignantProbability: number;
  refer: boolean;
  contentHash: string;
}

/** One output tensor, decoded: its datatype, shape and raw bytes. */
export interface OutputTensor {
  datatype: string;
  shape: number[];
  raw: Uint8Array;
}

/** The response's outputs by name (raw contents paired with their declared tensors). */
export function outputTensors(response: ModelInferResponse): Map<string, OutputTensor> {
  if (response.rawOutputContents.length !== response.outputs.length) {
    throw new Error(
      `${response.outputs.length} outputs but ${response.rawOutputContents.length} raw contents`,
    );
  }
  const tensors = new Map<string, OutputTensor>();
  response.outputs.forEach((output, index) => {
    tensors.set(output.name, {
      datatype: output.datatype,
      shape: output.shape.map((dimension) => Number(dimension)),
      raw: response.rawOutputContents[index]!,
    });
  });
  return tensors;
}

/** The classes of a `hemascope` response (its `classes` parameter), in PROBABILITIES' column order. */
export function responseClasses(response: ModelInferResponse): string[] {
  const parameter = response.parameters["classes"];
  if (parameter?.parameterChoice.case !== "stringParam") {
    throw new Error("the response has no 'classes' parameter");
  }
  return parameter.parameterChoice.value.split(",");
}

function output(tensors: Map<string, OutputTensor>, name: string): OutputTensor {
  const tensor = tensors.get(name);
  if (tensor === undefined) throw new Error(`the response has no ${name} output`);
  return tensor;
}

/** A `hemascope` ModelInfer response as one record per image, in request order. */
export function readImageInferences(response: ModelInferResponse): ImageInference[] {
  const tensors = outputTensors(response);
  const classes = responseClasses(response);
  const decoder = new TextDecoder();
  const labels = decodeBytesTensor(output(tensors, "LABEL").raw).map((item) => decoder.decode(item));
  const probabilities = decodeFp32Tensor(output(tensors, "PROBABILITIES").raw);
  const malignant = decodeFp32Tensor(output(tensors, "MALIGNANT_PROBABILITY").raw);
  const refer = decodeBoolTensor(output(tensors, "REFER").raw);
  const hashes = decodeBytesTensor(output(tensors, "CONTENT_HASH").raw).map((item) => decoder.decode(item));
  if (probabilities.length !== labels.length * classes.length) {
    throw new Error(`PROBABILITIES holds ${probabilities.length} values for ${labels.length} images`);
  }
  return labels.map((label, row) => ({
    label,
    probabilities: Object.fromEntries(
      classes.map((name, column) => [name, probabilities[row * classes.length + column]!]),
    ),
    malignantProbability: malignant[row]!,
    refer: refer[row]!,
    contentHash: hashes[row]!,
  }));
}
