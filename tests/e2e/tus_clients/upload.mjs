// Upload a file with tus-js-client, as a browser or Node app would, printing JSON lines:
// {"url"} once the upload exists, {"resumed_from"} at its first PATCH, then {"done"} or
// {"stopped"} (after stop_at bytes, the client aborts: the upload stays, to be resumed).
// usage: node upload.mjs ENDPOINT TOKEN PATH CHUNK_SIZE [UPLOAD_URL] [STOP_AT]
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import * as tus from "tus-js-client";

const [endpoint, token, path, chunk, uploadUrl, stopAt] = process.argv.slice(2);
const data = readFileSync(path);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
let firstPatch = true;

const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: uploadUrl || null,
  chunkSize: Number(chunk),
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: basename(path), filetype: "video/mp4" },
  retryDelays: [0, 500, 1000],
  onUploadUrlAvailable: () => say({ url: upload.url }),
  onBeforeRequest: (req) => {
    if (req.getMethod() === "PATCH" && firstPatch) {
      firstPatch = false;
      say({ resumed_from: Number(req.getHeader("Upload-Offset")) });
    }
  },
  onChunkComplete: (_size, accepted) => {
    if (Number(stopAt) > 0 && accepted >= Number(stopAt)) {
      upload.abort().then(() => { say({ stopped: accepted }); process.exit(0); });
    }
  },
  onSuccess: () => { say({ done: data.length }); },
  onError: (error) => { process.stderr.write(`${error}\n`); process.exit(1); },
});
upload.start();
