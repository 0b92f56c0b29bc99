using System.Text.Json;

namespace Kvq.Server.Tests;

/// <summary>Reads a server-sent-event stream the way a strict client would: "data: " lines separated by blank lines.</summary>
internal static class Sse
{
    public static async Task<List<string>> ReadAllAsync(HttpResponseMessage response)
    {
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = new List<string>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            events.Add(line["data: ".Length..]);
            Assert.Equal("", await reader.ReadLineAsync()); // every event ends with a blank line
        }
        return events;
    }

    public static IEnumerable<JsonElement> Json(IEnumerable<string> events) =>
        events.Where(e => e != "[DONE]").Select(e => JsonDocument.Parse(e).RootElement);
}
