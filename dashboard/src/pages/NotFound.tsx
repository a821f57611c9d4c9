import { Link } from "react-router";
import { Card, PageTitle } from "../components/ui";

export default function NotFound() {
  return (
    <>
      <PageTitle>Page not found</PageTitle>
      <Card>
        <p>There is no page at this address.</p>
        <p className="mt-2">
          <Link className="text-blue-700 underline dark:text-blue-300" to="/dashboard">
            Go to the overview
          </Link>
        </p>
      </Card>
    </>
  );
}
