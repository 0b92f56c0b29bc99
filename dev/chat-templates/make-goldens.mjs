// Renders every chat template in tests/Kvq.Tests/Chat/Templates over a fixed set of conversations with
// @huggingface/jinja (the reference, pinned in package.json) and writes tests/Kvq.Tests/Chat/Goldens/<name>.json.
// The C# tests (ChatTemplateGoldenTests) render the same inputs with Kvq's interpreter and compare exactly.
//
//   cd dev/chat-templates && npm ci && node make-goldens.mjs
//
// strftime_now reads the clock: it is fixed (FIXED_NOW, UTC) so that the goldens do not change from day to day.
process.env.TZ = "UTC";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";
import { snippets, snippetVariables } from "./snippets.mjs";

const FIXED_NOW = "2024-09-05T14:30:00Z";
const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(FIXED_NOW);
    else super(...args);
  }
  static now() { return new RealDate(FIXED_NOW).getTime(); }
};

const here = path.dirname(fileURLToPath(import.meta.url));
const chatTests = path.resolve(here, "../../tests/Kvq.Tests/Chat");
const templatesDir = path.join(chatTests, "Templates");
const goldensDir = path.join(chatTests, "Goldens");

// The special tokens each template family is used with (tokenizer_config.json's bos_token / eos_token).
const tokens = {
  "chatml": ["", "<|im_end|>"],
  "deepseek-r1-distill-qwen": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
  "gemma-2": ["<bos>", "<eos>"],
  "gemma-3": ["<bos>", "<eos>"],
  "llama-3.1": ["<|begin_of_text|>", "<|eot_id|>"],
  "llama-3.2": ["<|begin_of_text|>", "<|eot_id|>"],
  "mistral-nemo": ["<s>", "</s>"],
  "phi-3.5-mini": ["<s>", "<|endoftext|>"],
  "qwen2.5": ["", "<|im_end|>"],
  "qwen3": ["", "<|im_end|>"],
};

const system = { role: "system", content: "You are a helpful assistant." };
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a city",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", description: "City name, e.g. \"Paris\"" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["city"],
    },
  },
};

// name, messages, add_generation_prompt, tools, extra variables
const cases = [
  ["system_user", [system, { role: "user", content: "Hello!" }], true],
  ["system_user_no_generation_prompt", [system, { role: "user", content: "Hello!" }], false],
  ["multi_turn", [system,
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "2+2 equals 4." },
    { role: "user", content: "And 3+3?" }], true],
  ["multi_turn_ends_with_assistant", [system,
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "2+2 equals 4." }], false],
  ["no_system", [
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me a joke." }], true],
  ["single_user", [{ role: "user", content: "Hi" }], false],
  ["odd_content", [
    { role: "system", content: "Réponds en français 🇫🇷 «guillemets» \"double\" 'single'" },
    { role: "user", content: "Line one\nLine two\n\n  indented\ttab {{ not a tag }} {% neither %} \\backslash\r\nwindows" },
    { role: "assistant", content: "  padded answer with spaces  \n" },
    { role: "user", content: "日本語のテキスト & <html> </s> <|im_end|> \u0001 end" }], true],
  ["empty_content", [{ role: "user", content: "" }], true],
  ["reasoning_in_history", [
    { role: "user", content: "Why is the sky blue?" },
    { role: "assistant", content: "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering." },
    { role: "user", content: "Thanks!" }], true],
  ["thinking_disabled", [{ role: "user", content: "Quick answer please." }], true, null, { enable_thinking: false }],
  ["tools", [system, { role: "user", content: "What's the weather in Paris?" }], true, [weatherTool]],
  ["builtin_tools", [system, { role: "user", content: "Search the web." }], true, null,
    { builtin_tools: ["brave_search", "wolfram_alpha", "code_interpreter"] }],
  ["date_string", [{ role: "user", content: "What day is it?" }], true, null, { date_string: "01 Jan 2025" }],
  ["roles_not_alternating", [{ role: "user", content: "One" }, { role: "user", content: "Two" }], true],
  ["assistant_first", [{ role: "assistant", content: "I speak first." }, { role: "user", content: "OK" }], true],
];

fs.mkdirSync(goldensDir, { recursive: true });
for (const file of fs.readdirSync(templatesDir).filter((f) => f.endsWith(".jinja")).sort()) {
  const name = file.slice(0, -".jinja".length);
  const [bos, eos] = tokens[name] ?? (() => { throw new Error(`no special tokens listed for ${name}`); })();
  const source = fs.readFileSync(path.join(templatesDir, file), "utf8");
  const template = new Template(source);
  const out = { template: file, bos_token: bos, eos_token: eos, now: FIXED_NOW, cases: [] };
  for (const [caseName, messages, addGenerationPrompt, tools = null, extra = {}] of cases) {
    const c = { name: caseName, messages, add_generation_prompt: addGenerationPrompt, tools, extra };
    try {
      c.expected = template.render({
        messages, bos_token: bos, eos_token: eos, add_generation_prompt: addGenerationPrompt, tools, ...extra,
      });
    } catch (e) {
      // raise_exception messages are literals of the template; anything else is the reference failing on something
      // it does not implement (Llama 3.1's "reject" filter): kept apart, the C# tests check those cases by hand.
      if (source.includes(e.message)) c.error = e.message;
      else c.reference_error = e.message;
    }
    out.cases.push(c);
  }
  fs.writeFileSync(path.join(goldensDir, `${name}.json`), JSON.stringify(out, null, 2) + "\n");
  const count = (f) => out.cases.filter(f).length;
  console.log(`${name}: ${count((c) => c.expected !== undefined)} rendered, ${count((c) => c.error !== undefined)} raised, ` +
    `${count((c) => c.reference_error !== undefined)} not renderable by the reference`);
}

const snippetOut = { variables: snippetVariables, snippets: [] };
for (const [name, source] of snippets) {
  // Snippets that the reference cannot render would be useless as goldens: fail loudly instead.
  try {
    snippetOut.snippets.push({ name, template: source, expected: new Template(source).render({ ...snippetVariables }) });
  } catch (e) {
    throw new Error(`snippet ${name}: ${e.message}`);
  }
}
fs.writeFileSync(path.join(chatTests, "Snippets.json"), JSON.stringify(snippetOut, null, 2) + "\n");
console.log(`snippets: ${snippetOut.snippets.length} rendered`);
