package bus

// VersionAtLeast exposes versionAtLeast to the black-box tests.
var VersionAtLeast = versionAtLeast
