import { describe, expect, it } from "vitest";
import { parseSse } from "./sse";

describe("parseSse", () => {
  it("splits complete messages and keeps the unfinished rest", () => {
    const { messages, rest } = parseSse('id: a1\nevent: event\ndata: {"x":1}\n\n: keep-alive\n\nevent: skipped\ndata: {"skipped":3}\n\nid: b');
    expect(messages).toEqual([
      { id: "a1", event: "event", data: '{"x":1}' },
      { id: null, event: "skipped", data: '{"skipped":3}' },
    ]);
    expect(rest).toBe("id: b");
  });

  it("joins multi-line data and accepts CRLF line ends", () => {
    const { messages } = parseSse("data: one\r\ndata: two\r\n\r\n");
    expect(messages).toEqual([{ id: null, event: "message", data: "one\ntwo" }]);
  });
});
