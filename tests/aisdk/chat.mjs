// The Vercel AI SDK's own client (`ai`, as `useChat` uses it) against the reference backend:
// DefaultChatTransport posts each turn to /api/chat and readUIMessageStream folds the chunks
// into the assistant's message, exactly as useChat does. Run by tests/test_aisdk.py:
//
//   node chat.mjs <backend URL> <chat id>
//
// Two turns, then a resume while nothing runs (204: null), then a third turn read once
// directly and once through a resume while it runs (a replay from its start). Before the
// third turn's agent may answer, it prints {"waiting": true} and reads a line from stdin.
// Last, it prints what each reader saw as one JSON line.
import { createInterface } from "node:readline";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, chatId] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api: `${base}/api/chat`,
  body: { intent: "research_paper" },
});
const messages = [];
const seen = { chunks: [], turns: [] };

function userMessage(text) {
  return { id: `u${messages.length}`, role: "user", parts: [{ type: "text", text }] };
}

// What the assistant's message holds once the stream ends: its text parts (with whether
// each is a preamble) and the transient statuses seen on the way (onData gets those).
async function assistant(stream) {
  let last;
  const statuses = [];
  const tee = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        seen.chunks.push(chunk.type);
        if (chunk.type === "data-parlant-status") statuses.push(chunk.data.status);
        controller.enqueue(chunk);
      },
    }),
  );
  for await (const message of readUIMessageStream({ stream: tee })) last = message;
  const texts = last.parts
    .filter((part) => part.type === "text")
    .map((part) => ({ text: part.text, preamble: part.providerMetadata?.parlant?.preamble }));
  return { message: last, texts, statuses };
}

async function turn(text) {
  messages.push(userMessage(text));
  const stream = await transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  const answer = await assistant(stream);
  messages.push(answer.message);
  return answer;
}

const first = await turn("Tell me about CKD stage 3");
const second = await turn("And stage 4?");
const idle = await transport.reconnectToStream({ chatId });

messages.push(userMessage("One more"));
const running = await transport.sendMessages({
  chatId,
  messages,
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
});
const resumed = await transport.reconnectToStream({ chatId });
console.log(JSON.stringify({ waiting: true }));
const lines = createInterface({ input: process.stdin });
for await (const _ of lines) break; // the test releases the agent
const [direct, replayed] = await Promise.all([assistant(running), assistant(resumed)]);

console.log(
  JSON.stringify({
    turns: [first, second, direct, replayed].map(({ texts, statuses }) => ({ texts, statuses })),
    idleResume: idle,
    chunkTypes: [...new Set(seen.chunks)].sort(),
  }),
);
