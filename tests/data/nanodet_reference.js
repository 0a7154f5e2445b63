// Reference outputs of the NanoDet TF.js graph under the authors' runtime (@tensorflow/tfjs,
// its pure-JavaScript CPU backend), for tests/test_nanodet.py. Run by
// tests/data/make_nanodet_reference.py, which writes the inputs and reads the outputs:
//
//   NODE_PATH=/path/to/node_modules node tests/data/nanodet_reference.js MODEL_JSON IN_DIR OUT_DIR
//
// Every IN_DIR/<name>.f32 (a float32 1x3x416x416 tensor, little-endian, NanoDet's
// normalised BGR input) gives OUT_DIR/<name>.<output>.f32 for the six outputs of the
// graph (Identity … Identity_5: scores at strides 8/16/32, then distributions).
"use strict";
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

const OUTPUTS = ["Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0", "Identity_4:0", "Identity_5:0"];

async function main() {
  const [modelJson, inDir, outDir] = process.argv.slice(2);
  if (!outDir) throw new Error("usage: node nanodet_reference.js MODEL_JSON IN_DIR OUT_DIR");
  await tf.setBackend("cpu");
  const doc = JSON.parse(fs.readFileSync(modelJson, "utf8"));
  const dir = path.dirname(modelJson);
  const specs = [];
  const shards = [];
  for (const group of doc.weightsManifest) {
    for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
    specs.push(...group.weights);
  }
  const all = Buffer.concat(shards);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: doc.modelTopology, weightSpecs: specs, weightData,
    format: doc.format, generatedBy: doc.generatedBy, convertedBy: doc.convertedBy,
  }));
  fs.mkdirSync(outDir, { recursive: true });
  const info = { tfjs: tf.version.tfjs, backend: tf.getBackend(), node: process.version, files: [] };
  for (const f of fs.readdirSync(inDir).filter((f) => f.endsWith(".f32")).sort()) {
    const buf = fs.readFileSync(path.join(inDir, f));
    const data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const x = tf.tensor(data, [1, 3, 416, 416], "float32");
    const t0 = Date.now();
    const outs = await model.executeAsync({ "input_1": x }, OUTPUTS);
    const ms = Date.now() - t0;
    const stem = f.slice(0, -4);
    for (let k = 0; k < OUTPUTS.length; k++) {
      const v = await outs[k].data();
      fs.writeFileSync(path.join(outDir, `${stem}.${OUTPUTS[k].replace(":0", "")}.f32`),
        Buffer.from(v.buffer, v.byteOffset, v.byteLength));
      info.files.push({ name: stem, output: OUTPUTS[k], shape: outs[k].shape });
      outs[k].dispose();
    }
    x.dispose();
    console.log(`${stem}: ${ms} ms`);
  }
  fs.writeFileSync(path.join(outDir, "info.json"), JSON.stringify(info, null, 1));
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
