// One peer of benchmarks/bench_peers.py: the renditions of every image in a folder with sharp
// (Node's libvips binding), as a Node user would write it.
//
//   node sharp_renditions.js SRC_DIR OUT_DIR PRESETS_JSON CONCURRENCY
//
// PRESETS_JSON is [[name, width, height|null, "cover"|"contain", quality], ...]. Per image:
// read the file, SHA-256 it, then per preset sharp(data).rotate().resize(...) and
// .webp({quality, effort: 2}) to OUT_DIR/<file stem>.<preset>.webp. sharp decodes once per
// preset with JPEG shrink-on-load, as pyvips' thumbnail_buffer does in the pyvips pool; it
// strips metadata by default (keep="none"). CONCURRENCY images are in flight at once and libvips
// runs one thread per image (sharp.concurrency(1)): the layout of the farm's one
// single-threaded worker per core. Prints one JSON line: {"images": n, "renditions": m, "bytes": b}.
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs/promises");
const path = require("node:path");
const sharp = require("sharp");

async function render(file, outDir, presets) {
  const data = await fs.readFile(file);
  crypto.createHash("sha256").update(data).digest("hex");
  const stem = path.parse(file).name;
  let bytes = 0;
  for (const [name, width, height, fit, quality] of presets) {
    const out = await sharp(data)
      .rotate()
      .resize(width, height || width, {
        fit: fit === "cover" ? "cover" : "inside",
        position: "centre",
        withoutEnlargement: true,
      })
      .webp({ quality, effort: 2 })
      .toBuffer();
    await fs.writeFile(path.join(outDir, `${stem}.${name}.webp`), out);
    bytes += out.length;
  }
  return bytes;
}

async function main() {
  const [srcDir, outDir, presetsJson, concurrency] = process.argv.slice(2);
  const presets = JSON.parse(presetsJson);
  sharp.concurrency(1);
  sharp.cache(false);
  const files = (await fs.readdir(srcDir)).sort().map((name) => path.join(srcDir, name));
  let next = 0;
  let bytes = 0;
  async function lane() {
    while (next < files.length) {
      const file = files[next++];
      const written = await render(file, outDir, presets);  // not `bytes += await`: it reads first
      bytes += written;
    }
  }
  await Promise.all(Array.from({ length: Number(concurrency) || 1 }, lane));
  console.log(JSON.stringify({ images: files.length, renditions: files.length * presets.length,
                               bytes }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
