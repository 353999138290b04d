// Compiled (not run) by `npm run build`: the shipped declarations type a school's code as the
// README shows it, and reject misuse (each @ts-expect-error must be an error).
import { LiveClassClient, LiveClassError, type CommentEvent, type GapEvent } from "../dist/index.js";

const client = new LiveClassClient({
  url: "wss://school.example/ws",
  getToken: async () => "token",
  position: { epoch: "E1", lastId: "1-0" },
});
client.on("comment", (c: CommentEvent) => console.log(c.id, c.from, c.text, c.own, c.ref));
client.on("presence", ({ count }) => console.log(count.toFixed(0)));
client.on("gap", (g: GapEvent) => console.log(g.reason, g.position.lastId, g.previous?.epoch));
client.on("disconnected", ({ code, delayMs }) => console.log(code + delayMs));
client.connect();
export async function post(): Promise<string> {
  try {
    return (await client.comment("hi", { ref: "r1" })).id;
  } catch (error) {
    if (error instanceof LiveClassError) return error.code;
    throw error;
  }
}
const sent: boolean = client.react("👍") && client.dm("u1", "hello");
console.log(sent, client.state satisfies "idle" | "connecting" | "connected" | "disconnected" | "closed");
// @ts-expect-error: not an event
client.on("commentz", () => {});
// @ts-expect-error: presence carries a count, not text
client.on("presence", (p) => p.text);
// @ts-expect-error: getToken is required
new LiveClassClient({ url: "ws://x/ws" });
