"""Every module and example under terraform/ has a README whose terraform-docs tables match its
.tf files (scripts/terraform-docs.py writes them), and the examples are what they say: minimal
sets only the required inputs, complete sets every input of the module.

Run by scripts/test: python -m unittest discover -s tests/deploy
"""

import importlib.util
import unittest

import hcl2

from test_parity import MODULE, ROOT, _unquote

spec = importlib.util.spec_from_file_location("terraform_docs", ROOT / "scripts" / "terraform-docs.py")
terraform_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(terraform_docs)


def _module_block(example):
    for path in sorted(example.glob("*.tf")):
        for block in hcl2.loads(path.read_text()).get("module", []):
            (name, body), = _unquote(block).items()
            if name == "spendguard":
                return {k: v for k, v in body.items() if k != "__is_block__"}
    raise AssertionError(f"{example}: no module spendguard")


class TerraformDocs(unittest.TestCase):
    def test_every_readme_is_up_to_date(self):
        found = [d.relative_to(ROOT).as_posix() for d in terraform_docs.directories()]
        self.assertEqual(found, ["terraform/examples/complete", "terraform/examples/minimal", "terraform/modules/spendguard"])
        for directory in terraform_docs.directories():
            readme = directory / "README.md"
            self.assertTrue(readme.is_file(), readme)
            text = readme.read_text()
            self.assertEqual(
                text, terraform_docs.updated(text, terraform_docs.render(directory)),
                f"{readme.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/terraform-docs.py",
            )

    def test_a_new_variable_makes_the_readme_stale(self):
        text = (MODULE / "README.md").read_text()
        block = terraform_docs.render(MODULE)
        self.assertIn("[permissions_boundary](#input\\_permissions\\_boundary)", block)
        self.assertIn("| `map(string)` | `{}` | no |", block)
        self.assertIn("[function_arns](#output\\_function\\_arns)", block)
        stale = text.replace("| <a name=\"input_tags\"></a>", "| <a name=\"input_labels\"></a>")
        self.assertNotEqual(stale, terraform_docs.updated(stale, block))

    def test_examples_pin_their_versions(self):
        for example in ["minimal", "complete"]:
            (block,) = hcl2.loads((ROOT / "terraform/examples" / example / "versions.tf").read_text())["terraform"]
            block = _unquote(block)
            self.assertTrue(block["required_version"].startswith("~> "), example)
            (providers,) = block["required_providers"]
            self.assertTrue(providers["aws"]["version"].startswith("~> "), example)

    def test_minimal_sets_the_required_inputs_and_complete_sets_every_input(self):
        variables = {}
        for path in MODULE.glob("*.tf"):
            for block in hcl2.loads(path.read_text()).get("variable", []):
                variables.update(_unquote(block))
        required = {name for name, spec in variables.items() if "default" not in spec}
        minimal = _module_block(ROOT / "terraform/examples/minimal")
        self.assertEqual(set(minimal) - {"source"}, required | {"lambda_zip_dir"})
        complete = _module_block(ROOT / "terraform/examples/complete")
        self.assertEqual(sorted(set(variables) - set(complete)), [], "inputs the complete example leaves out")


if __name__ == "__main__":
    unittest.main()
