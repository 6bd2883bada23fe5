// Streams one prediction through Flowise's own JS SDK (flowise-sdk) and
// prints each event it yields as a JSON line. The SDK throws on any data:
// line that is not JSON, so a replay it cannot read fails here.
// Usage: node sdk-stream.mjs BASE_URL FLOW_ID QUESTION
import { createRequire } from 'node:module';
const require = createRequire(process.env.SDK_DIR + '/');
const { FlowiseClient } = require('flowise-sdk');

const [base, flowId, question] = process.argv.slice(2);
const client = new FlowiseClient({ baseUrl: base });
const stream = await client.createPrediction({ chatflowId: flowId, question, streaming: true });
if (!stream[Symbol.asyncIterator]) {
  console.error('the SDK did not stream');
  process.exit(2);
}
for await (const ev of stream) {
  console.log(JSON.stringify(ev));
}
