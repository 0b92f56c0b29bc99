using System.Reflection;
using System.Text.RegularExpressions;

namespace Kvq.Tests.Docs;

/// <summary>The tables of supported architectures, RoPE types and weight types (README, docs/models.md) name the check
/// behind every row, and every test class (and Class.Method) they name exists in this assembly.</summary>
public partial class ModelTablesTests
{
    [Theory]
    [InlineData("README.md", "| family (GGUF arch) |")]
    [InlineData("docs/models.md", "| model (synthetic) |")]
    [InlineData("docs/models.md", "| variant | where Kvq reads it |")]
    public void EveryRowNamesATestThatExists(string file, string header)
    {
        var lines = File.ReadAllLines(Path.Combine(RepositoryRoot(), file));
        int start = Array.FindIndex(lines, l => l.StartsWith(header, StringComparison.Ordinal));
        Assert.True(start >= 0, $"{file}: no table starting '{header}'");
        var rows = lines.Skip(start + 2).TakeWhile(l => l.StartsWith('|')).ToList();
        Assert.True(rows.Count >= 5, $"{file}: {rows.Count} rows under '{header}'");
        var types = typeof(ModelTablesTests).Assembly.GetTypes().Where(t => !t.IsNested)
            .GroupBy(t => t.Name, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        foreach (var row in rows)
        {
            var named = TestName().Matches(row).ToList();
            Assert.True(named.Count > 0, $"{file}: row names no test: {row[..Math.Min(80, row.Length)]}");
            foreach (Match m in named)
            {
                Assert.True(types.TryGetValue(m.Groups[1].Value, out var type), $"{file}: {m.Groups[1].Value} is not a test class");
                if (m.Groups[2].Success)
                    Assert.True(type!.GetMethod(m.Groups[2].Value, BindingFlags.Public | BindingFlags.Instance) != null,
                        $"{file}: {m.Value} is not a test method");
            }
        }
    }

    [GeneratedRegex(@"\b([A-Z][A-Za-z0-9]*Tests)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\b")]
    private static partial Regex TestName();

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Kvq.slnx"))) return d.FullName;
        throw new DirectoryNotFoundException("Kvq.slnx not found above " + AppContext.BaseDirectory);
    }
}
