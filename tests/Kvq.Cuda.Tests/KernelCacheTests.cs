namespace Kvq.Cuda.Tests;

public class KernelCacheTests
{
    [Fact]
    public void KeyChangesWithSourceArchOptionsAndCompiler()
    {
        var k = KernelCache.Key("src", "sm_90", ["-lineinfo"], "nvrtc 13.0");
        Assert.Equal(64, k.Length);
        Assert.Equal(k, KernelCache.Key("src", "sm_90", ["-lineinfo"], "nvrtc 13.0"));
        Assert.NotEqual(k, KernelCache.Key("src ", "sm_90", ["-lineinfo"], "nvrtc 13.0"));
        Assert.NotEqual(k, KernelCache.Key("src", "sm_90a", ["-lineinfo"], "nvrtc 13.0"));
        Assert.NotEqual(k, KernelCache.Key("src", "sm_90", [], "nvrtc 13.0"));
        Assert.NotEqual(k, KernelCache.Key("src", "sm_90", ["-lineinfo"], "nvrtc 13.1"));
    }

    [Fact]
    public void KeyCoversTheIncludedHeadersText()
    {
        var k = KernelCache.Key("src", "sm_90", ["-lineinfo"], "nvrtc 13.0");
        Assert.Equal(k, KernelCache.Key("src", [], "sm_90", ["-lineinfo"], "nvrtc 13.0"));   // no headers: the old key
        var h = KernelCache.Key("src", [new KernelHeader("common.cuh", "typedef unsigned int u32;")], "sm_90", ["-lineinfo"], "nvrtc 13.0");
        Assert.NotEqual(k, h);
        Assert.NotEqual(h, KernelCache.Key("src", [new KernelHeader("common.cuh", "typedef unsigned int  u32;")], "sm_90", ["-lineinfo"], "nvrtc 13.0"));
        Assert.NotEqual(h, KernelCache.Key("src", [new KernelHeader("other.cuh", "typedef unsigned int u32;")], "sm_90", ["-lineinfo"], "nvrtc 13.0"));
    }

    [Fact]
    public void CompilesOnceThenReadsTheFile()
    {
        var dir = Path.Combine(Path.GetTempPath(), "kvq-cubin-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var cache = new KernelCache(dir);
            int compiles = 0;
            byte[] Compile() { compiles++; return [1, 2, 3]; }
            Assert.Equal(new byte[] { 1, 2, 3 }, cache.GetOrCompile("abc", Compile));
            Assert.Equal(new byte[] { 1, 2, 3 }, new KernelCache(dir).GetOrCompile("abc", Compile));
            Assert.Equal(1, compiles);
            Assert.Equal(["abc.cubin"], Directory.GetFiles(dir).Select(Path.GetFileName));   // no temp file left
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void AnUnwritableFolderOnlyCostsACompile()
    {
        var file = Path.GetTempFileName();   // a file where the folder should be
        try
        {
            var cache = new KernelCache(Path.Combine(file, "sub"));
            Assert.Equal(new byte[] { 7 }, cache.GetOrCompile("k", () => [7]));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
