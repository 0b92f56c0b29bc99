using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Kvq.Chat.Templates;

/// <summary>Source-generated (AOT-safe) serialization of JsonNode, to read one as a JsonElement.</summary>
[JsonSerializable(typeof(JsonNode))]
internal sealed partial class JsonNodeContext : JsonSerializerContext;
